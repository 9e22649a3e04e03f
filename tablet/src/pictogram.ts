// A body-region pictogram for the protocol picker: a lying-figure silhouette (head at the top) with the
// protocol's range drawn between its superior and inferior landmarks (from protocols/ via ListProtocols).

/** Where a landmark lies along the body, 0 at the vertex to 1 at the soles (adult proportions). */
const LEVEL: Record<string, number> = {
  skull_vertex: 0.0,
  nose: 0.06,
  chin: 0.12,
  jugular_notch: 0.18,
  lung_apex: 0.17,
  shoulder_line: 0.18,
  xiphoid: 0.3,
  costophrenic: 0.34,
  iliac_crest: 0.42,
  lesser_trochanter: 0.52,
  knee: 0.72,
  ankle: 0.95,
};

const SVG = "http://www.w3.org/2000/svg";

function el(name: string, attrs: Record<string, string | number>): SVGElement {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** The pictogram; unknown landmarks fall back to the whole body. */
export function pictogram(superior: string, inferior: string, label: string): SVGElement {
  const h = 120;
  const top = 4;
  const len = h - 8;
  const svg = el("svg", { viewBox: `0 0 48 ${h}`, width: 48, height: h, role: "img", "aria-label": label });
  const body = el("g", { class: "figure" });
  body.append(
    el("circle", { cx: 24, cy: top + 7, r: 7 }),
    el("rect", { x: 14, y: top + 16, width: 20, height: 36, rx: 5 }),
    el("rect", { x: 6, y: top + 18, width: 6, height: 34, rx: 3 }),
    el("rect", { x: 36, y: top + 18, width: 6, height: 34, rx: 3 }),
    el("rect", { x: 15, y: top + 50, width: 8, height: 58, rx: 3 }),
    el("rect", { x: 25, y: top + 50, width: 8, height: 58, rx: 3 }),
  );
  svg.append(body);
  const a = LEVEL[superior] ?? 0;
  const b = LEVEL[inferior] ?? 1;
  const y0 = top + Math.min(a, b) * len;
  const y1 = top + Math.max(a, b) * len;
  svg.append(el("rect", { class: "range", x: 2, y: y0, width: 44, height: Math.max(3, y1 - y0), rx: 2 }));
  return svg;
}
