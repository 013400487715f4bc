// The status badge and the progress bar, shared by every page.

import { statusText } from './format.js';

const BADGE_CLASSES = ['badge-queued', 'badge-processing', 'badge-completed', 'badge-failed', 'badge-cancelled'];

export function renderBadge(badge, job) {
  badge.classList.remove(...BADGE_CLASSES);
  badge.classList.add(`badge-${job.status}`);
  badge.textContent = statusText(job);
}

// `progressBox` holds a .progress[role=progressbar] and a .progress-label.
export function renderProgress(progressBox, percent, label) {
  const value = Math.max(0, Math.min(100, Math.round(percent || 0)));
  const bar = progressBox.querySelector('.progress');
  bar.setAttribute('aria-valuenow', String(value));
  bar.querySelector('.progress-bar').style.width = `${value}%`;
  const text = progressBox.querySelector('.progress-label');
  if (text) text.textContent = label ?? `${value} %`;
}

export function showMessage(element, text) {
  element.textContent = text || '';
  element.hidden = !text;
}
