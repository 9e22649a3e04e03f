// The plan in the words and numbers a radiographer acts on. Pure functions (tested with node:test).
// Conventions (DESIGN.md): millimetres; scanner frame +x lateral, +y into the gantry, +z up; table
// vertical moves positive = up; DICOM position codes.

export const POSITION_NAMES: Record<string, string> = {
  HFS: "Head first, supine",
  HFP: "Head first, prone",
  FFS: "Feet first, supine",
  FFP: "Feet first, prone",
  HFDL: "Head first, left side down",
  HFDR: "Head first, right side down",
  FFDL: "Feet first, left side down",
  FFDR: "Feet first, right side down",
};

export const ARMS_NAMES: Record<string, string> = {
  sides: "arms at the sides",
  raised: "arms raised above the head",
  chest: "arms on the chest",
};

export interface Move {
  /** What to do, e.g. "Raise table". */
  label: string;
  /** The number, e.g. "34 mm" ("—" for no move). */
  value: string;
  /** No move needed (within 1 mm). */
  none: boolean;
  /** A second line, e.g. the side as seen from the foot of the table. */
  detail?: string;
}

const mm = (v: number): string => `${Math.round(Math.abs(v))} mm`;

/** Vertical table move: positive = up. */
export function verticalMove(verticalMm: number): Move {
  if (!Number.isFinite(verticalMm) || Math.abs(verticalMm) < 1) {
    return { label: "Table height", value: "no change", none: true };
  }
  return { label: verticalMm > 0 ? "Raise table" : "Lower table", value: mm(verticalMm), none: false };
}

/** Longitudinal table travel along +y (into the gantry). */
export function longitudinalMove(longitudinalMm: number): Move {
  if (!Number.isFinite(longitudinalMm) || Math.abs(longitudinalMm) < 1) {
    return { label: "Table travel", value: "no change", none: true };
  }
  return { label: longitudinalMm > 0 ? "Move in" : "Move out", value: mm(longitudinalMm), none: false };
}

/** Lateral off-centre as a move of the patient (tables do not move sideways). */
export function lateralMove(lateralMm: number, description: string): Move {
  if (!Number.isFinite(lateralMm) || Math.abs(lateralMm) < 1 || description === "none") {
    return { label: "Patient sideways", value: "centred", none: true };
  }
  // "12 mm toward the patient's left (right as seen from the foot of the table)"
  const m = /^\d+ mm (.*?)(?: \((.*)\))?$/.exec(description);
  const toward = (m?.[1] ?? description).replace("toward the patient's ", "to the patient's ");
  return { label: `Move patient ${toward}`, value: mm(lateralMm), none: false, detail: m?.[2] ?? "" };
}

/** The dose and noise impact of the current vertical mis-centering, in one line. */
export function centeringLine(offsetMm: number, dosePercent: number, noisePercent: number): string {
  if (!Number.isFinite(offsetMm)) return "";
  if (Math.abs(offsetMm) < 1) return "Centred vertically: no dose or noise penalty.";
  const where = offsetMm < 0 ? "below" : "above";
  const pct = (p: number) => `${p >= 0 ? "+" : "−"}${Math.abs(p).toFixed(0)} %`;
  return (
    `Patient ${mm(offsetMm)} ${where} the isocenter now: ` +
    `surface dose ${pct(dosePercent)}, image noise ${pct(noisePercent)} if scanned like this.`
  );
}

export interface RangeWords {
  main: string;
  detail: string;
}

/** The scan range: in table readings when the console reported a table position, else along scanner y. */
export function rangeWords(r: {
  startMm: number;
  endMm: number;
  lengthMm: number;
  direction: string;
  firstSliceTableMm?: number;
  lastSliceTableMm?: number;
}): RangeWords {
  const dir = r.direction === "caudocranial" ? "feet to head" : "head to feet";
  if (r.firstSliceTableMm !== undefined && r.lastSliceTableMm !== undefined) {
    return {
      main: `Table ${Math.round(r.firstSliceTableMm)} → ${Math.round(r.lastSliceTableMm)} mm`,
      detail: `${Math.round(r.lengthMm)} mm, ${dir} (table readings at the first and last slice)`,
    };
  }
  return {
    main: `${Math.round(r.lengthMm)} mm, ${dir}`,
    detail:
      `scanner y ${Math.round(r.startMm)} to ${Math.round(r.endMm)} mm; ` +
      "no table reading from the console yet, so not in table coordinates",
  };
}

/** The perceived patient in words. */
export function patientWords(position: string, arms: string, positionConfidence: number): string {
  if (!position) return "No patient perceived";
  const name = POSITION_NAMES[position] ?? position;
  const a = arms ? `, ${ARMS_NAMES[arms] ?? arms}` : "";
  const unsure = positionConfidence > 0 && positionConfidence < 0.6 ? " (uncertain)" : "";
  return `${name} (${position})${unsure}${a}`;
}

/** An event for the technologist: the service's sentence, with a headline. */
export function eventHeadline(kind: string, displacementMm: Record<string, number>): string {
  switch (kind) {
    case "PATIENT_MOVED": {
      // the largest component, as the service's own sentence names it
      const [dir, mm] = Object.entries(displacementMm).reduce<[string, number]>(
        (best, [k, v]) => (Number.isFinite(v) && Math.abs(v) > Math.abs(best[1]) ? [k, v] : best),
        ["", 0],
      );
      const words: Record<string, string> = { sideways: "sideways", along_the_table: "along the table", height: "in height" };
      return mm !== 0
        ? `Patient moved ${Math.round(Math.abs(mm))} mm ${words[dir] ?? dir} since confirmation`
        : "Patient moved since confirmation";
    }
    case "PATIENT_MOVING":
      return "Patient is moving";
    case "SECOND_PERSON":
      return "Second person in view";
    case "PLAN_INVALID":
      return "Plan no longer valid";
    case "CAMERA_LOST":
      return "Camera lost";
    case "CAMERA_BACK":
      return "Camera back";
    default:
      return kind;
  }
}

/** Severity of an event's banner. */
export function eventSeverity(kind: string): "error" | "warning" | "info" {
  if (kind === "PATIENT_MOVED" || kind === "PLAN_INVALID" || kind === "CAMERA_LOST") return "error";
  if (kind === "CAMERA_BACK") return "info";
  return "warning";
}

/** Retry delay after `attempt` failed tries: 0.5 s doubling to 5 s. */
export function retryDelayMs(attempt: number): number {
  return Math.min(5000, 500 * 2 ** Math.max(0, attempt - 1));
}
