// The plan's words and numbers (node:test; `npm test` bundles this with esbuild and runs it).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  centeringLine,
  eventHeadline,
  eventSeverity,
  lateralMove,
  longitudinalMove,
  patientWords,
  rangeWords,
  retryDelayMs,
  verticalMove,
} from "../src/words.js";

test("table moves say which way, in whole millimetres", () => {
  assert.deepEqual(verticalMove(34.4), { label: "Raise table", value: "34 mm", none: false });
  assert.deepEqual(verticalMove(-12.6), { label: "Lower table", value: "13 mm", none: false });
  assert.equal(verticalMove(0.4).none, true);
  assert.equal(verticalMove(Number.NaN).none, true);
  assert.deepEqual(longitudinalMove(819.2), { label: "Move in", value: "819 mm", none: false });
  assert.equal(longitudinalMove(-40).label, "Move out");
});

test("the lateral off-centre is a move of the patient, in the service's words", () => {
  const m = lateralMove(-12, "12 mm toward the patient's right (left as seen from the foot of the table)");
  assert.equal(m.label, "Move patient to the patient's right");
  assert.equal(m.value, "12 mm");
  assert.equal(m.detail, "left as seen from the foot of the table");
  assert.equal(lateralMove(0.3, "none").none, true);
});

test("centering names the side and both penalties", () => {
  assert.equal(
    centeringLine(-32.2, 17.4, 12.1),
    "Patient 32 mm below the isocenter now: surface dose +17 %, image noise +12 % if scanned like this.",
  );
  assert.match(centeringLine(0.2, 0, 0), /^Centred/);
});

test("the range is in table readings when the console reported one", () => {
  const r = { startMm: -1166, endMm: -818, lengthMm: 348, direction: "craniocaudal" };
  assert.equal(rangeWords(r).main, "348 mm, head to feet");
  assert.match(rangeWords(r).detail, /no table reading/);
  const t = rangeWords({ ...r, firstSliceTableMm: 1418.4, lastSliceTableMm: 1766.2 });
  assert.equal(t.main, "Table 1418 → 1766 mm");
});

test("patient, events and retries", () => {
  assert.equal(patientWords("HFS", "raised", 0.9), "Head first, supine (HFS), arms raised above the head");
  assert.equal(patientWords("FFP", "", 0.4), "Feet first, prone (FFP) (uncertain)");
  assert.equal(patientWords("", "", 0), "No patient perceived");
  assert.equal(
    eventHeadline("PATIENT_MOVED", { sideways: -23.4, along_the_table: 12 }),
    "Patient moved 23 mm sideways since confirmation",
  );
  assert.equal(eventHeadline("PATIENT_MOVED", {}), "Patient moved since confirmation");
  assert.equal(eventSeverity("PATIENT_MOVED"), "error");
  assert.equal(eventSeverity("CAMERA_BACK"), "info");
  assert.deepEqual([1, 2, 3, 4, 5, 9].map(retryDelayMs), [500, 1000, 2000, 4000, 5000, 5000]);
});
