// A variation's effects in words: {"contrast": 1.03, "rotation": -0.004}
// reads "Contrast +3.0 %", "Rotation −0.23°". Unknown effects are shown as they are.

function signed(value, decimals) {
  const text = Math.abs(value).toFixed(decimals);
  if (Number(text) === 0) return text;
  return `${value < 0 ? '−' : '+'}${text}`;
}

const percentChange = (factor) => `${signed((factor - 1) * 100, 1)} %`;

const DESCRIPTIONS = {
  brightness: ['Brightness', (v) => `${signed(v * 100, 1)} %`],
  contrast: ['Contrast', percentChange],
  saturation: ['Saturation', percentChange],
  hue: ['Hue', (v) => `${signed(v, 1)}°`],
  zoom: ['Zoom', (v) => `${(v * 100).toFixed(1)} %`],
  rotation: ['Rotation', (v) => `${signed((v * 180) / Math.PI, 2)}°`],
  noise: ['Film grain', (v) => `strength ${v}`],
  speed: ['Speed', percentChange],
  mirror: ['Mirrored', (v) => (v ? 'yes' : 'no')],
};

function humanize(key) {
  const words = key.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function asText(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

// [[label, value], ...] in a stable, readable order.
export function describeEffects(effects) {
  const rows = [];
  const framed = typeof effects?.panX === 'number' && typeof effects?.panY === 'number';
  for (const [key, value] of Object.entries(effects ?? {})) {
    if (framed && (key === 'panX' || key === 'panY')) continue;
    const known = DESCRIPTIONS[key];
    rows.push(known && typeof value === (key === 'mirror' ? 'boolean' : 'number')
      ? [known[0], known[1](value)]
      : [humanize(key), asText(value)]);
  }
  if (framed) {
    rows.push(['Framing', `${Math.round(effects.panX * 100)} % across, ${Math.round(effects.panY * 100)} % down`]);
  }
  return rows;
}
