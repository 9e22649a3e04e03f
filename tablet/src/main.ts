import { TabletApp } from "./app.js";

new TabletApp().start();
