// tumorseg's offline slice viewer: three planes, four sequences, two label overlays, a crosshair.
// Volumes arrive gzip-compressed and base64-encoded, as uint8 arrays of shape (X, Y, Z) in C order
// on the BraTS (LPS) grid: x towards the patient's left, y towards posterior, z towards superior.
"use strict";

const TUMORSEG_COLORS = { 1: [230, 25, 25], 2: [25, 204, 51], 3: [255, 217, 0] };

async function tumorsegDecode(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function tumorsegViewer(root, data) {
  const [X, Y, Z] = data.shape;
  const at = (x, y, z) => (x * Y + y) * Z + z;
  const images = {};
  for (const name of Object.keys(data.images)) images[name] = await tumorsegDecode(data.images[name]);
  const overlays = {};
  for (const name of Object.keys(data.overlays)) overlays[name] = await tumorsegDecode(data.overlays[name]);
  const state = {
    image: Object.keys(images)[0], x: data.focus[0], y: data.focus[1], z: data.focus[2],
    shown: Object.fromEntries(Object.keys(overlays).map((n) => [n, true])), opacity: 0.5, crosshair: true,
  };
  // Each plane: its size and, for a canvas pixel (column, row), the voxel it shows.
  const planes = {
    axial: { cols: X, rows: Y, voxel: (c, r) => [c, r, state.z], index: "z", size: Z,
             mm: [data.spacing[0], data.spacing[1]], cross: () => [state.x, state.y] },
    coronal: { cols: X, rows: Z, voxel: (c, r) => [c, state.y, Z - 1 - r], index: "y", size: Y,
               mm: [data.spacing[0], data.spacing[2]], cross: () => [state.x, Z - 1 - state.z] },
    sagittal: { cols: Y, rows: Z, voxel: (c, r) => [state.x, c, Z - 1 - r], index: "x", size: X,
                mm: [data.spacing[1], data.spacing[2]], cross: () => [state.y, Z - 1 - state.z] },
  };
  const q = (selector) => root.querySelector(selector);
  const readout = q(".ts-readout");

  function draw(name) {
    const plane = planes[name];
    const canvas = q(`canvas[data-plane=${name}]`);
    canvas.width = plane.cols;
    canvas.height = plane.rows;
    const scale = 360 / Math.max(plane.cols * plane.mm[0], plane.rows * plane.mm[1]);
    canvas.style.width = `${plane.cols * plane.mm[0] * scale}px`;
    canvas.style.height = `${plane.rows * plane.mm[1] * scale}px`;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(plane.cols, plane.rows);
    const image = images[state.image];
    for (let r = 0; r < plane.rows; r++) {
      for (let c = 0; c < plane.cols; c++) {
        const [x, y, z] = plane.voxel(c, r);
        const i = at(x, y, z);
        let rgb = [image[i], image[i], image[i]];
        for (const [overlay, labels] of Object.entries(overlays)) {
          if (!state.shown[overlay] || !labels[i]) continue;
          const outline = overlay === "reference" || (data.outlined || []).includes(overlay);
          if (outline && !isEdge(labels, x, y, z, name)) continue;
          const color = overlay === "uncertainty" ? [255, 255 - labels[i], 0] : TUMORSEG_COLORS[labels[i]];
          const alpha = outline ? 1 : overlay === "uncertainty" ? state.opacity * labels[i] / 255 : state.opacity;
          rgb = rgb.map((v, k) => (1 - alpha) * v + alpha * color[k]);
        }
        pixels.data.set([...rgb, 255], 4 * (r * plane.cols + c));
      }
    }
    context.putImageData(pixels, 0, 0);
    if (state.crosshair) {
      const [cx, cy] = plane.cross();
      context.fillStyle = "rgba(120, 160, 255, 0.6)";
      context.fillRect(cx, 0, 1, plane.rows);
      context.fillRect(0, cy, plane.cols, 1);
    }
    q(`input[data-plane=${name}]`).value = state[plane.index];
    q(`span[data-plane=${name}]`).textContent = `${plane.index} ${state[plane.index] + 1}/${plane.size}`;
  }

  // A reference voxel is drawn when a neighbour in the plane differs: an outline, not a fill.
  function isEdge(labels, x, y, z, name) {
    const steps = name === "axial" ? [[1, 0, 0], [0, 1, 0]] : name === "coronal" ? [[1, 0, 0], [0, 0, 1]] : [[0, 1, 0], [0, 0, 1]];
    const here = labels[at(x, y, z)];
    for (const [dx, dy, dz] of steps) {
      for (const sign of [-1, 1]) {
        const [u, v, w] = [x + sign * dx, y + sign * dy, z + sign * dz];
        if (u < 0 || v < 0 || w < 0 || u >= X || v >= Y || w >= Z || labels[at(u, v, w)] !== here) return true;
      }
    }
    return false;
  }

  function describe() {
    const i = at(state.x, state.y, state.z);
    const parts = [`voxel (${state.x}, ${state.y}, ${state.z})`, `${state.image} ${images[state.image][i]}`];
    for (const [overlay, labels] of Object.entries(overlays)) {
      parts.push(overlay === "uncertainty" ? `uncertainty ${(labels[i] / 255).toFixed(2)}` : `${overlay}: ${data.names[labels[i]]}`);
    }
    readout.textContent = parts.join(" | ");
  }

  function redraw() {
    for (const name of Object.keys(planes)) draw(name);
    describe();
  }

  for (const [name, plane] of Object.entries(planes)) {
    const slider = q(`input[data-plane=${name}]`);
    slider.max = plane.size - 1;
    slider.addEventListener("input", () => { state[plane.index] = Number(slider.value); redraw(); });
    q(`canvas[data-plane=${name}]`).addEventListener("click", (event) => {
      const box = event.target.getBoundingClientRect();
      const c = Math.floor(((event.clientX - box.left) / box.width) * plane.cols);
      const r = Math.floor(((event.clientY - box.top) / box.height) * plane.rows);
      [state.x, state.y, state.z] = plane.voxel(c, r);
      redraw();
    });
  }
  for (const button of root.querySelectorAll("button[data-image]")) {
    button.addEventListener("click", () => { state.image = button.dataset.image; redraw(); });
  }
  for (const box of root.querySelectorAll("input[data-overlay]")) {
    box.addEventListener("change", () => { state.shown[box.dataset.overlay] = box.checked; redraw(); });
  }
  q("input.ts-opacity").addEventListener("input", (event) => { state.opacity = Number(event.target.value); redraw(); });
  q("input.ts-crosshair").addEventListener("change", (event) => { state.crosshair = event.target.checked; redraw(); });

  // Settings in the address (#axial=40&overlay=off&image=t1ce) go through the same controls.
  const settings = new URLSearchParams(window.location.hash.slice(1));
  for (const [name, plane] of Object.entries(planes)) {
    if (settings.has(name)) {
      const slider = q(`input[data-plane=${name}]`);
      slider.value = settings.get(name);
      slider.dispatchEvent(new Event("input"));
    }
  }
  if (settings.get("overlay") === "off") {
    for (const box of root.querySelectorAll("input[data-overlay]")) { box.checked = false; box.dispatchEvent(new Event("change")); }
  }
  if (settings.get("crosshair") === "off") {
    const box = q("input.ts-crosshair");
    box.checked = false;
    box.dispatchEvent(new Event("change"));
  }
  if (settings.has("image")) q(`button[data-image=${settings.get("image")}]`).click();
  redraw();
  root.dataset.ready = "yes";
}
