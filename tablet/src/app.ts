// The technologist's tablet: start a session, watch the patient and the plan, confirm, see motion events.
// Everything comes from the positioning.v1 service over gRPC-Web; the wording of checks and events is the
// service's own.
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError, getToken, isAborted, isUnreachable, makeClient, setToken } from "./api.js";
import type {
  Check,
  ConfirmedPlan,
  DeviceStatus,
  Estimate,
  Event as ServiceEvent,
  Plan,
  ProtocolInfo,
  SessionInfo,
} from "./gen/positioning/v1/positioning_pb.js";
import { pictogram } from "./pictogram.js";
import {
  centeringLine,
  eventHeadline,
  eventSeverity,
  lateralMove,
  longitudinalMove,
  type Move,
  patientWords,
  POSITION_NAMES,
  rangeWords,
  retryDelayMs,
  verticalMove,
} from "./words.js";

const SESSION_KEY = "positioning.session";
const HEARTBEAT_MS = 2000;
/** Pictures follow the estimates (a new picture for each newly perceived frame), at most this often... */
const PICTURE_MIN_INTERVAL_MS = 100;
/** ...and at least this often (the camera's state still shows when perception stalls). */
const PICTURE_MAX_INTERVAL_MS = 1000;
const STALE_PICTURE_MS = 2000;

/** Figures the page measures about itself (read by the browser tests and `positioning bench tablet`). */
export interface TabletStats {
  /** performance.now() when the protocols were first shown (the page is usable). */
  readyMs: number | null;
  /** Frame arrival on the server to its picture decoded on this page, ms (last 500). */
  pictureLatencyMs: number[];
  /** Frame arrival on the server to its estimate shown on this page, ms (last 500). */
  estimateLatencyMs: number[];
  picturesShown: number;
}

declare global {
  interface Window {
    tabletStats: TabletStats;
  }
}

function $(id: string): HTMLElement {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e;
}

/** Resolves after `ms`, at once on `signal`'s abort, or when the function handed to `wake` is called. */
function sleep(ms: number, signal?: AbortSignal, wake?: (early: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    wake?.(done);
  });
}

function push(list: number[], v: number): void {
  list.push(v);
  if (list.length > 500) list.shift();
}

export class TabletApp {
  private client = makeClient();
  private protocols: ProtocolInfo[] = [];
  private protocol: ProtocolInfo | null = null;
  private expectedPosition = "";
  private session: SessionInfo | null = null;
  private plan: Plan | null = null;
  private estimate: Estimate | null = null;
  private confirmed: ConfirmedPlan | null = null;
  private nextEventIndex = 0n;
  private sessionAbort: AbortController | null = null;
  private unreachable = false;
  private attempt = 0;
  private depthOnly = false;
  private lastPictureAt = 0;
  private pictureUrl: string | null = null;
  private busy = false;
  private lastEstimateAt = 0;
  /** A PATIENT_MOVED or PLAN_INVALID arrived since the last ConfirmPlan was sent. */
  private invalidatedSinceConfirm = false;
  private newEstimate: (() => void) | null = null;
  private estimatesSeen = 0;
  readonly stats: TabletStats = { readyMs: null, pictureLatencyMs: [], estimateLatencyMs: [], picturesShown: 0 };

  start(): void {
    window.tabletStats = this.stats;
    this.wire();
    this.renderToken();
    void this.heartbeat();
    void this.loadProtocols();
    setInterval(() => this.renderStaleness(), 500);
  }

  // ---------------------------------------------------------------------------------------- wiring

  private wire(): void {
    $("start-button").addEventListener("click", () => void this.startSession());
    $("confirm-button").addEventListener("click", () => void this.confirm());
    $("end-button").addEventListener("click", () => void this.endSession());
    $("depth-toggle").addEventListener("click", () => {
      this.depthOnly = !this.depthOnly;
      $("depth-toggle").setAttribute("aria-pressed", String(this.depthOnly));
      $("depth-toggle").textContent = this.depthOnly ? "Show colour" : "Depth only (privacy)";
    });
    $("sign-in").addEventListener("click", () => {
      const dialog = $("token-dialog") as HTMLDialogElement;
      ($("token-input") as HTMLInputElement).value = getToken();
      dialog.showModal();
    });
    $("token-form").addEventListener("submit", () => {
      setToken(($("token-input") as HTMLInputElement).value.trim());
      this.renderToken();
      this.clearActionError();
      void this.loadProtocols();
      void this.refreshDevice();
    });
    $("token-clear").addEventListener("click", () => {
      setToken("");
      ($("token-dialog") as HTMLDialogElement).close();
      this.renderToken();
    });
    $("alerts").addEventListener("click", (e) => {
      const button = (e.target as HTMLElement).closest("button[data-ack]");
      if (button) button.closest(".alert")?.remove();
    });
  }

  private renderToken(): void {
    $("sign-in").textContent = getToken() ? "Signed in (token)" : "Sign in";
  }

  // ----------------------------------------------------------------------------------- connection

  /** GetDeviceStatus every 2 s: the connection banner, and the camera line. */
  private async heartbeat(): Promise<void> {
    for (;;) {
      try {
        const d = await this.client.getDeviceStatus({}, { timeoutMs: 3000 });
        this.setReachable(true);
        this.renderDevice(d);
        if (this.protocols.length === 0) void this.loadProtocols();
        await sleep(HEARTBEAT_MS);
      } catch (e) {
        if (isUnreachable(e)) {
          this.setReachable(false);
          await sleep(retryDelayMs(this.attempt));
        } else {
          this.setReachable(true);
          $("camera-line").textContent = describeError(e);
          await sleep(HEARTBEAT_MS);
        }
      }
    }
  }

  private async refreshDevice(): Promise<void> {
    try {
      this.renderDevice(await this.client.getDeviceStatus({}, { timeoutMs: 3000 }));
    } catch (e) {
      if (!isUnreachable(e)) $("camera-line").textContent = describeError(e);
    }
  }

  private setReachable(ok: boolean): void {
    if (ok) {
      const was = this.unreachable;
      this.unreachable = false;
      this.attempt = 0;
      if (was) void this.resumeSession();
    } else {
      this.unreachable = true;
      this.attempt += 1;
    }
    const banner = $("connection");
    banner.hidden = ok;
    banner.textContent = ok
      ? ""
      : `Server unreachable — retrying (attempt ${this.attempt}, next in ` +
        `${(retryDelayMs(this.attempt) / 1000).toFixed(1)} s). Plans shown may be out of date.`;
    document.body.classList.toggle("offline", !ok);
  }

  private renderDevice(d: DeviceStatus): void {
    const camera = d.cameraOk ? `${d.cameraModel} · ${d.fps.toFixed(0)} fps` : "camera LOST";
    $("camera-line").textContent = `${camera} · calibration ${d.calibrationMethod || "?"}`;
    $("camera-line").classList.toggle("bad", !d.cameraOk);
  }

  // ------------------------------------------------------------------------------------ protocols

  private async loadProtocols(): Promise<void> {
    try {
      const r = await this.client.listProtocols({}, { timeoutMs: 5000 });
      this.protocols = r.protocols;
      this.renderProtocols();
      if (this.stats.readyMs === null) this.stats.readyMs = performance.now();
      await this.resumeSession();
    } catch (e) {
      if (!isUnreachable(e)) this.showActionError(describeError(e));
    }
  }

  private renderProtocols(): void {
    const grid = $("protocols");
    grid.replaceChildren();
    for (const p of this.protocols) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "protocol";
      b.dataset.protocol = p.name;
      b.setAttribute("aria-pressed", String(this.protocol?.name === p.name));
      b.title = p.description;
      const label = document.createElement("span");
      label.className = "protocol-name";
      label.textContent = p.name.replaceAll("-", " ");
      const hint = document.createElement("span");
      hint.className = "protocol-positions";
      hint.textContent = p.acceptedPositions.join(" · ");
      b.append(pictogram(p.superiorLandmark, p.inferiorLandmark, `${p.bodyRegion} range`), label, hint);
      b.addEventListener("click", () => {
        this.protocol = p;
        this.expectedPosition = "";
        this.renderProtocols();
      });
      grid.append(b);
    }
    this.renderPositions();
  }

  private renderPositions(): void {
    const row = $("positions");
    row.replaceChildren();
    $("protocol-description").textContent = this.protocol?.description ?? "Choose a protocol.";
    const options = ["", ...Object.keys(POSITION_NAMES)];
    for (const code of options) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "position";
      b.dataset.position = code;
      const accepted = this.protocol?.acceptedPositions ?? [];
      b.textContent = code === "" ? `As protocol (${accepted.join("/") || "—"})` : code;
      b.title = code === "" ? "The protocol's accepted positions" : POSITION_NAMES[code];
      b.setAttribute("aria-pressed", String(this.expectedPosition === code));
      b.addEventListener("click", () => {
        this.expectedPosition = code;
        this.renderPositions();
      });
      row.append(b);
    }
    ($("start-button") as HTMLButtonElement).disabled = this.protocol === null || this.busy;
  }

  // -------------------------------------------------------------------------------------- session

  private async startSession(): Promise<void> {
    if (!this.protocol) return;
    const height = parseFloat(($("height") as HTMLInputElement).value);
    const weight = parseFloat(($("weight") as HTMLInputElement).value);
    this.setBusy(true);
    try {
      const s = await this.client.startSession(
        {
          protocol: this.protocol.name,
          expectedPosition: this.expectedPosition,
          patientHeightMm: Number.isFinite(height) ? height * 10 : undefined,
          patientWeightKg: Number.isFinite(weight) ? weight : undefined,
        },
        { timeoutMs: 10000 },
      );
      this.enterSession(s);
    } catch (e) {
      const err = ConnectError.from(e);
      const active = /session ([0-9a-f]{32}) is active/.exec(err.rawMessage);
      if (err.code === Code.FailedPrecondition && active) {
        this.showActionError(`${describeError(e)}.`, { label: "Join that session", run: () => this.join(active[1]) });
      } else {
        this.showActionError(describeError(e));
      }
    } finally {
      this.setBusy(false);
    }
  }

  private async join(sessionId: string): Promise<void> {
    try {
      this.enterSession(await this.client.getSession({ sessionId }));
    } catch (e) {
      this.showActionError(describeError(e));
    }
  }

  /** After a reload or a lost connection: back into the session this tab was in, if it is still active. */
  private async resumeSession(): Promise<void> {
    const id = this.session?.sessionId ?? sessionStorage.getItem(SESSION_KEY);
    if (!id) return;
    try {
      const s = await this.client.getSession({ sessionId: id });
      if (s.active) this.enterSession(s);
      else sessionStorage.removeItem(SESSION_KEY);
    } catch (e) {
      if (!isUnreachable(e)) sessionStorage.removeItem(SESSION_KEY);
    }
  }

  private enterSession(s: SessionInfo): void {
    this.sessionAbort?.abort();
    const same = this.session?.sessionId === s.sessionId;
    this.session = s;
    if (!same) {
      // another session (or the first): nothing of the previous one may show, least of all its patient
      this.plan = null;
      this.estimate = null;
      this.confirmed = null;
      this.lastEstimateAt = 0;
      this.nextEventIndex = 0n;
      $("events").replaceChildren();
      $("alerts").replaceChildren();
      this.clearPicture();
    }
    this.clearActionError();
    sessionStorage.setItem(SESSION_KEY, s.sessionId);
    document.body.dataset.screen = "session";
    $("session-title").textContent =
      `${s.protocol.replaceAll("-", " ")} · expected ${s.expectedPosition || "as protocol"} · session ${s.sessionId.slice(0, 8)}`;
    const abort = new AbortController();
    this.sessionAbort = abort;
    void this.watchEstimates(s.sessionId, abort.signal);
    void this.watchEvents(s.sessionId, abort.signal);
    void this.refreshPictures(s.sessionId, abort.signal);
    if (s.confirmed && !same) void this.loadConfirmed(s.sessionId, abort.signal);
    this.renderPlan();
  }

  /** A tab that comes back to a confirmed session shows the confirmed plan (the current one comes first). */
  private async loadConfirmed(sessionId: string, signal: AbortSignal): Promise<void> {
    const local = new AbortController();
    signal.addEventListener("abort", () => local.abort());
    setTimeout(() => local.abort(), 5000);
    try {
      for await (const c of this.client.watchConfirmedPlans({}, { signal: local.signal })) {
        if (c.sessionId === sessionId) {
          this.confirmed = c;
          this.renderPlan();
        }
        break;
      }
    } catch {
      // no confirmed plan to show: the live preview stands
    } finally {
      local.abort();
    }
  }

  private clearPicture(): void {
    const img = $("live") as HTMLImageElement;
    img.removeAttribute("src");
    if (this.pictureUrl) URL.revokeObjectURL(this.pictureUrl);
    this.pictureUrl = null;
    this.lastPictureAt = 0;
    $("live-frame").textContent = "";
  }

  private leaveSession(message?: string): void {
    this.sessionAbort?.abort();
    this.sessionAbort = null;
    this.session = null;
    this.clearPicture();
    sessionStorage.removeItem(SESSION_KEY);
    document.body.dataset.screen = "start";
    if (message) this.showActionError(message);
  }

  private async endSession(): Promise<void> {
    if (!this.session) return;
    this.setBusy(true);
    try {
      await this.client.endSession({ sessionId: this.session.sessionId }, { timeoutMs: 10000 });
      this.leaveSession();
    } catch (e) {
      const code = ConnectError.from(e).code;
      if (code === Code.NotFound || code === Code.FailedPrecondition) this.leaveSession();
      else this.showActionError(describeError(e));
    } finally {
      this.setBusy(false);
    }
  }

  /** A session that the server no longer has (ended elsewhere, server restarted) ends here too. */
  private sessionGone(e: unknown): boolean {
    const code = ConnectError.from(e).code;
    if (code === Code.NotFound || code === Code.FailedPrecondition) {
      this.leaveSession(`The session ended: ${ConnectError.from(e).rawMessage}`);
      return true;
    }
    return false;
  }

  private async watchEstimates(sessionId: string, signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        for await (const est of this.client.watchEstimates({ sessionId, includePreview: true }, { signal })) {
          failures = 0;
          this.estimate = est;
          this.lastEstimateAt = Date.now();
          this.estimatesSeen += 1;
          this.newEstimate?.();
          if (est.preview) this.plan = est.preview;
          this.renderEstimate();
          if (est.preview) this.renderPlan();
          if (est.frameReceivedUnixMs > 0) push(this.stats.estimateLatencyMs, Date.now() - est.frameReceivedUnixMs);
        }
        if (!signal.aborted) this.leaveSession("The session ended.");
        return;
      } catch (e) {
        if (signal.aborted || isAborted(e) || this.sessionGone(e)) return;
        if (!isUnreachable(e)) this.showActionError(describeError(e));
        failures += 1;
        await sleep(retryDelayMs(failures), signal);
      }
    }
  }

  private async watchEvents(sessionId: string, signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        const stream = this.client.watchEvents({ sessionId, fromIndex: this.nextEventIndex }, { signal });
        for await (const ev of stream) {
          failures = 0;
          this.nextEventIndex = ev.index + 1n;
          this.showEvent(ev);
        }
        return;
      } catch (e) {
        if (signal.aborted || isAborted(e) || this.sessionGone(e)) return;
        failures += 1;
        await sleep(retryDelayMs(failures), signal);
      }
    }
  }

  /** Resolves at the next estimate of a new frame, or after `ms`. */
  private async nextEstimate(ms: number, signal: AbortSignal): Promise<void> {
    let early: (() => void) | null = null;
    await sleep(ms, signal, (wake) => {
      early = wake;
      this.newEstimate = wake;
    });
    if (this.newEstimate === early) this.newEstimate = null;
  }

  private async refreshPictures(sessionId: string, signal: AbortSignal): Promise<void> {
    const img = $("live") as HTMLImageElement;
    let failures = 0;
    let seenAtRequest = -1;
    while (!signal.aborted) {
      const t0 = performance.now();
      seenAtRequest = this.estimatesSeen;
      try {
        // JPEG: about 40 kB a picture instead of 600 kB of PNG, for the hospital's Wi-Fi
        const o = await this.client.getOverlay(
          { sessionId, depthOnly: this.depthOnly, jpeg: true },
          { signal, timeoutMs: 5000 },
        );
        const url = URL.createObjectURL(new Blob([o.jpeg as BlobPart], { type: "image/jpeg" }));
        const next = new Image();
        next.src = url;
        try {
          await next.decode();
        } catch (e) {
          URL.revokeObjectURL(url);
          throw e;
        }
        if (signal.aborted) {
          URL.revokeObjectURL(url); // a late picture of a session this tab has left
          return;
        }
        img.src = url;
        img.width = o.widthPx;
        img.height = o.heightPx;
        if (this.pictureUrl) URL.revokeObjectURL(this.pictureUrl);
        this.pictureUrl = url;
        this.lastPictureAt = Date.now();
        this.stats.picturesShown += 1;
        if (o.frameReceivedUnixMs > 0) push(this.stats.pictureLatencyMs, Date.now() - o.frameReceivedUnixMs);
        $("live-frame").textContent = `frame ${o.frameNumber} · ${
          o.frameReceivedUnixMs > 0 ? `${Math.max(0, Date.now() - o.frameReceivedUnixMs).toFixed(0)} ms old` : ""
        }`;
        failures = 0;
      } catch (e) {
        if (signal.aborted || isAborted(e)) return;
        const code = ConnectError.from(e).code;
        if (code === Code.NotFound) return; // the estimates stream ends the session
        failures += 1;
        await sleep(retryDelayMs(failures), signal);
        continue;
      }
      await sleep(Math.max(0, PICTURE_MIN_INTERVAL_MS - (performance.now() - t0)), signal);
      if (this.estimatesSeen === seenAtRequest) {
        await this.nextEstimate(PICTURE_MAX_INTERVAL_MS - PICTURE_MIN_INTERVAL_MS, signal);
      }
    }
  }

  private renderStaleness(): void {
    if (this.session) this.renderPlan();
    const stale = this.session !== null && this.lastPictureAt > 0 && Date.now() - this.lastPictureAt > STALE_PICTURE_MS;
    $("live-stale").hidden = !stale;
    if (stale) $("live-stale").textContent = `Live view not updated for ${((Date.now() - this.lastPictureAt) / 1000).toFixed(0)} s`;
  }

  // ----------------------------------------------------------------------------------- estimate/plan

  private renderEstimate(): void {
    const est = this.estimate;
    if (!est) return;
    const st = est.state;
    $("patient-words").textContent = st ? patientWords(st.patientPosition, st.arms, st.positionConfidence) : "";
    const status = st && st.status !== "OK" ? `${st.status}: ${st.message}` : "";
    $("perception-status").textContent = status;
    $("perception-status").hidden = status === "";
    $("moving").hidden = !st?.moving;
  }

  /** The live plan is no longer current: the server is unreachable or no estimate came for 2 s. */
  private planStale(): boolean {
    return this.unreachable || this.lastEstimateAt === 0 || Date.now() - this.lastEstimateAt > STALE_PICTURE_MS;
  }

  private renderPlan(): void {
    // a confirmed plan stands only while the live plan has no error (PATIENT_MOVED, PLAN_INVALID, ...)
    if (this.confirmed && this.plan?.checks.some((c) => c.severity === "error")) this.confirmed = null;
    const p = this.confirmed?.plan ?? this.plan;
    const root = $("plan");
    root.dataset.frame = p ? String(p.frameNumber) : "";
    root.dataset.state = this.confirmed ? "confirmed" : p ? "preview" : "none";
    $("plan-heading").textContent = this.confirmed
      ? `Confirmed by ${this.confirmed.operator || "—"} (frame ${this.confirmed.plan?.frameNumber ?? "?"})`
      : p
        ? `Plan preview (frame ${p.frameNumber}, updates live)`
        : "Waiting for the first plan…";
    const t = p?.tableOffset;
    this.renderMove("move-vertical", t ? verticalMove(t.verticalMm) : null, t?.verticalMm);
    this.renderMove("move-longitudinal", t ? longitudinalMove(t.longitudinalMm) : null, t?.longitudinalMm);
    this.renderMove(
      "move-lateral",
      t ? lateralMove(t.lateralPatientMoveMm, t.lateralPatientMoveDescription) : null,
      t?.lateralPatientMoveMm,
    );
    $("residual").textContent =
      t && Math.abs(t.verticalResidualMm) >= 1
        ? `Table limit: the isocenter stays ${Math.round(Math.abs(t.verticalResidualMm))} mm ${t.verticalResidualMm < 0 ? "below" : "above"} the patient's centre.`
        : "";
    const r = p?.scanRange;
    const words = r ? rangeWords(r) : null;
    $("range-main").textContent = words?.main ?? "—";
    $("range-detail").textContent = words?.detail ?? "";
    $("range").dataset.firstSliceMm = r ? String(r.firstSliceMm) : "";
    const c = p?.centering;
    $("centering").textContent = c
      ? centeringLine(c.verticalOffsetMm, c.surfaceDoseIncreasePercent, c.noiseIncreasePercent)
      : "";
    this.renderChecks(p?.checks ?? []);
    const error = (p?.checks ?? []).find((x) => x.severity === "error");
    const confirm = $("confirm-button") as HTMLButtonElement;
    const stale = this.planStale();
    confirm.disabled = this.busy || !p || !p.ok || error !== undefined || this.confirmed !== null || stale;
    $("confirm-why").textContent = this.confirmed
      ? "Confirmed. Motion since confirmation is reported here."
      : !p
        ? "No plan yet."
        : stale
          ? "Cannot confirm: the live plan is not current (waiting for the server)."
        : error
          ? `Cannot confirm: ${error.code} (see the red check).`
          : !p.ok
            ? "Cannot confirm: no complete plan on this frame."
            : "";
  }

  private renderMove(id: string, move: Move | null, raw: number | undefined): void {
    const box = $(id);
    box.querySelector(".label")!.textContent = move?.label ?? "—";
    box.querySelector(".value")!.textContent = move?.value ?? "";
    const detail = box.querySelector(".detail");
    if (detail) detail.textContent = move?.detail ?? "";
    box.dataset.mm = raw === undefined ? "" : raw.toFixed(1);
    box.classList.toggle("none", move?.none ?? true);
  }

  private renderChecks(checks: Check[]): void {
    const root = $("checks");
    root.replaceChildren();
    for (const c of checks) {
      const div = document.createElement("div");
      div.className = `banner ${c.severity}`;
      div.dataset.code = c.code;
      div.setAttribute("role", c.severity === "error" ? "alert" : "status");
      const code = document.createElement("strong");
      code.textContent = `${c.severity === "error" ? "Error" : c.severity === "warning" ? "Warning" : "Note"} · ${c.code}`;
      const msg = document.createElement("span");
      msg.textContent = c.message;
      div.append(code, msg);
      root.append(div);
    }
  }

  private async confirm(): Promise<void> {
    if (!this.session) return;
    this.setBusy(true);
    this.invalidatedSinceConfirm = false;
    try {
      const confirmed = await this.client.confirmPlan(
        { sessionId: this.session.sessionId, note: "" },
        { timeoutMs: 10000 },
      );
      // a move reported while the answer was on its way makes the confirmation void at once
      this.confirmed = this.invalidatedSinceConfirm ? null : confirmed;
      this.clearActionError();
    } catch (e) {
      this.showActionError(describeError(e));
    } finally {
      this.setBusy(false);
      this.renderPlan();
    }
  }

  // ------------------------------------------------------------------------------------------ events

  private showEvent(ev: ServiceEvent): void {
    const headline = eventHeadline(ev.kind, ev.displacementMm);
    const severity = eventSeverity(ev.kind);
    const li = document.createElement("li");
    li.className = severity;
    li.dataset.kind = ev.kind;
    li.textContent = `${headline}: ${ev.message}`;
    $("events").prepend(li);
    const wasConfirmed = this.confirmed !== null;
    if (ev.kind === "PATIENT_MOVED" || ev.kind === "PLAN_INVALID") {
      // the confirmed plan no longer holds: planning goes on from the live preview
      this.confirmed = null;
      this.invalidatedSinceConfirm = true;
      this.renderPlan();
    }
    // Before confirmation only what needs action now becomes a banner; after it, every motion event does.
    if (severity !== "error" && !wasConfirmed && ev.kind !== "SECOND_PERSON") return;
    const alert = document.createElement("div");
    alert.className = `alert ${severity}`;
    alert.dataset.kind = ev.kind;
    alert.setAttribute("role", severity === "error" ? "alert" : "status");
    const h = document.createElement("strong");
    h.textContent = headline;
    const p = document.createElement("span");
    p.textContent = ev.message;
    const ack = document.createElement("button");
    ack.type = "button";
    ack.dataset.ack = "1";
    ack.textContent = "Seen";
    alert.append(h, p, ack);
    $("alerts").prepend(alert);
  }

  // -------------------------------------------------------------------------------------- feedback

  private setBusy(busy: boolean): void {
    this.busy = busy;
    ($("start-button") as HTMLButtonElement).disabled = busy || this.protocol === null;
    ($("end-button") as HTMLButtonElement).disabled = busy;
    if (this.session) this.renderPlan();
  }

  private showActionError(message: string, action?: { label: string; run: () => Promise<void> }): void {
    const box = $("action-error");
    box.hidden = false;
    box.replaceChildren();
    const span = document.createElement("span");
    span.textContent = message;
    box.append(span);
    if (action) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = action.label;
      b.addEventListener("click", () => void action.run());
      box.append(b);
    }
  }

  private clearActionError(): void {
    $("action-error").hidden = true;
    $("action-error").replaceChildren();
  }
}
