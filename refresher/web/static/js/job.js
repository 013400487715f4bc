// The job page: every source with its progress and its finished variations,
// each one previewable and downloadable alone; live until the job ends.

import { asSentence, getJSON } from './api.js';
import { cancelJob, deleteJob } from './actions.js';
import { describeEffects } from './effects.js';
import {
  formatBytes, formatDuration, hasDownload, isFinal, isStale, jobTitle, plural, setTime,
} from './format.js';
import { followJob } from './live.js';
import { renderBadge, renderProgress, showMessage } from './status.js';

const root = document.getElementById('job');
const jobId = root.dataset.jobId;
const sourcesBox = document.getElementById('sources');
const sourceTemplate = document.getElementById('source-template');
const variationTemplate = document.getElementById('variation-template');
const actionError = document.getElementById('job-action-error');
const liveError = document.getElementById('job-live-error');
const cancelButton = document.getElementById('cancel-job');
const deleteButton = document.getElementById('delete-job');
const sources = new Map();

let job = JSON.parse(document.getElementById('initial-job').textContent);
let stopFollowing = () => {};

// A job can have 200 variations: load a preview only when it comes near the screen.
const previews = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    entry.target.src = entry.target.dataset.src;
    previews.unobserve(entry.target);
  }
}, { rootMargin: '300px' });

const TIMES = [
  ['Created', 'createdAt'],
  ['Started', 'startedAt'],
  ['Finished', 'finishedAt'],
  ['Cancelled', 'cancelledAt'],
  ['Kept until', 'expiresAt'],
];

function renderTimes() {
  const list = document.getElementById('job-times');
  list.replaceChildren();
  for (const [label, key] of TIMES) {
    if (!job[key] || (key === 'expiresAt' && !isFinal(job.status))) continue;
    const row = document.createElement('div');
    const term = document.createElement('dt');
    const detail = document.createElement('dd');
    const time = document.createElement('time');
    term.textContent = label;
    setTime(time, job[key]);
    detail.append(time);
    row.append(term, detail);
    list.append(row);
  }
}

function renderHeader() {
  const seed = job.seed ? ` · seed “${job.seed}”` : '';
  document.getElementById('job-summary').textContent =
    `${plural(job.totalVideos, 'video')} × ${plural(job.variationsPerVideo, 'variation')}${seed}`;
  renderBadge(document.getElementById('job-badge'), job);
  const ready = `${job.completedVariations} of ${job.totalVariations} variations ready`;
  if (job.status === 'cancelled' || job.status === 'failed') {
    renderProgress(document.getElementById('job-progress'), (100 * job.completedVariations) / job.totalVariations, ready);
  } else {
    renderProgress(document.getElementById('job-progress'), job.overallProgress, `${job.overallProgress} % · ${ready}`);
  }
  root.dataset.status = job.status;
  showMessage(document.getElementById('job-error'), job.error ? asSentence(job.error) : '');
  document.getElementById('download-all').hidden = !hasDownload(job);
  cancelButton.hidden = isFinal(job.status);
  deleteButton.hidden = !isFinal(job.status);
  renderTimes();
}

function renderEffects(list, effects) {
  list.replaceChildren();
  for (const [label, value] of describeEffects(effects)) {
    const row = document.createElement('div');
    const term = document.createElement('dt');
    const detail = document.createElement('dd');
    term.textContent = label;
    detail.textContent = value;
    row.append(term, detail);
    list.append(row);
  }
}

function createVariation(file, output) {
  const card = variationTemplate.content.firstElementChild.cloneNode(true);
  card.dataset.outputId = output.id;
  card.dataset.index = String(output.variationIndex);
  const video = card.querySelector('video');
  video.dataset.src = `${output.url}#t=0.1`;  // a media fragment makes browsers paint a first frame
  previews.observe(video);
  video.setAttribute('aria-label', `Preview of variation ${output.variationIndex} of ${file.name}`);
  card.querySelector('.variation-title').textContent = `Variation ${output.variationIndex}`;
  card.querySelector('.variation-file').textContent = `${output.name} · ${formatBytes(output.size)}`;
  const download = card.querySelector('a[download]');
  download.href = `${output.url}?download=1`;
  download.setAttribute('aria-label', `Download variation ${output.variationIndex} of ${file.name}`);
  renderEffects(card.querySelector('.effects'), output.effects);
  card.querySelector('.effects-raw pre').textContent = JSON.stringify(output.effects, null, 2);
  return card;
}

function renderSource(file) {
  let view = sources.get(file.id);
  if (!view) {
    const element = sourceTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.fileId = file.id;
    view = { element, outputs: new Map() };
    sources.set(file.id, view);
    sourcesBox.append(element);
  }
  const { element, outputs } = view;
  element.querySelector('.source-name').textContent = file.name;
  const facts = [formatBytes(file.size), formatDuration(file.durationSeconds)];
  if (file.width && file.height) facts.push(`${file.width}×${file.height}`);
  if (file.hasAudio === false) facts.push('no sound');
  element.querySelector('.source-meta').textContent = facts.filter(Boolean).join(' · ');
  renderBadge(element.querySelector('.badge'), file);
  const progress = element.querySelector('.job-progress');
  progress.hidden = isFinal(file.status);
  renderProgress(progress, file.progress, `${file.progress} % · ${file.completedVariations} of ${file.totalVariations} ready`);
  showMessage(element.querySelector('.source-error'), file.error ? asSentence(file.error) : '');

  const grid = element.querySelector('.variation-grid');
  for (const output of file.outputs) {
    if (outputs.has(output.id)) continue;
    const card = createVariation(file, output);
    const after = [...grid.children].find((other) => Number(other.dataset.index) > output.variationIndex);
    grid.insertBefore(card, after ?? null);
    outputs.set(output.id, card);
  }
  const missing = file.totalVariations - file.outputs.length;
  let pending = '';
  if (missing > 0 && !isFinal(job.status)) pending = `${plural(missing, 'more variation')} on the way…`;
  else if (missing > 0 && job.status === 'cancelled') pending = `${plural(missing, 'variation')} not made: the job was cancelled.`;
  showMessage(element.querySelector('.variations-pending'), pending);
}

function render() {
  renderHeader();
  for (const file of job.files) renderSource(file);
}

function show(next, { force = false } = {}) {
  if (!force && isStale(job, next)) return;
  job = next;
  render();
}

function jobGone() {
  stopFollowing();
  showMessage(actionError, 'This job was deleted.');
  cancelButton.hidden = true;
  deleteButton.hidden = true;
}

function follow() {
  if (isFinal(job.status)) return;
  stopFollowing = followJob(jobId, {
    onUpdate: show,
    onGone: jobGone,
    onError: (error) => showMessage(liveError, error ? `Live updates paused: ${error.message}` : ''),
  });
}

cancelButton.addEventListener('click', async () => {
  const answer = await cancelJob({ button: cancelButton, jobId, title: jobTitle(job.files.map((f) => f.name)), errorBox: actionError });
  if (answer === null) return;
  stopFollowing();
  try {
    show(await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`));
  } catch {
    show({ ...job, status: answer.status, completedVariations: answer.completedVariations,
           cancelledAt: answer.cancelledAt }, { force: true });
  }
  if (answer.status === 'completed') showMessage(actionError, 'It had already finished, so nothing was cancelled.');
  if (!isFinal(job.status)) follow();
});

deleteButton.addEventListener('click', async () => {
  if (await deleteJob({ button: deleteButton, jobId, title: jobTitle(job.files.map((f) => f.name)), errorBox: actionError })) {
    window.location.assign('/');
  }
});

render();
follow();
