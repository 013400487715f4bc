// The job page: every source with its progress and its finished variations,
// each one previewable and downloadable alone; live until the job ends.

import { asSentence, getJSON } from './api.js';
import { cancelJob, deleteJob, reopenJob, rerunJob } from './actions.js';
import { describeEffects } from './effects.js';
import {
  formatBytes, formatDuration, hasDownload, isFinal, isStale, jobTitle, plural, setTime,
} from './format.js';
import { followJob } from './live.js';
import { jobStarted, setUpNotifications, showProgressInTitle } from './notify.js';
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
const retryButton = document.getElementById('retry-job');
const resumeButton = document.getElementById('resume-job');
const rerunButton = document.getElementById('rerun-job');
const rerunForm = document.getElementById('rerun-form');
const rerunVariations = document.getElementById('rerun-variations');
const sources = new Map();

let job = JSON.parse(document.getElementById('initial-job').textContent);
let stopFollowing = () => {};
let webhookTimer = null;

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
  // Shown by the server when no host encodes; gone once the job leaves the queue.
  if (job.status !== 'queued') document.getElementById('job-no-host').hidden = true;
  document.getElementById('download-all').hidden = !hasDownload(job);
  cancelButton.hidden = isFinal(job.status);
  deleteButton.hidden = !isFinal(job.status);
  retryButton.hidden = !(isFinal(job.status) && job.failedVariations > 0);
  resumeButton.hidden = job.status !== 'cancelled';
  rerunButton.hidden = !isFinal(job.status);
  if (rerunButton.hidden) showRerunForm(false);
  renderTimes();
  renderWebhook();
  showProgressInTitle([job]);
}

// How the announcement of the job's end went (a job created with a webhookUrl).
function renderWebhook() {
  const box = document.getElementById('job-webhook');
  const hook = job.webhook;
  box.hidden = !hook;
  if (!hook) return;
  box.querySelector('.webhook-url').textContent = hook.url;
  const attempts = plural(hook.attempts, 'attempt');
  let state;
  if (hook.deliveredAt) state = `delivered (${attempts})`;
  else if (!isFinal(job.status)) state = 'sent when the job ends';
  else if (hook.lastError && hook.lastError.includes('gave up')) state = `not delivered: ${hook.lastError}`;
  else if (hook.lastError) state = `retrying (${attempts} so far): ${hook.lastError}`;
  else state = 'being sent';
  box.querySelector('.webhook-state').textContent = state;
  const time = box.querySelector('time');
  time.hidden = !hook.deliveredAt;
  if (hook.deliveredAt) setTime(time, hook.deliveredAt);
  clearTimeout(webhookTimer);
  if (isFinal(job.status) && !hook.deliveredAt && !(hook.lastError ?? '').includes('gave up')) {
    // The page stops following the job when it ends; the delivery comes after.
    webhookTimer = setTimeout(async () => {
      try {
        show(await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`));
      } catch {
        // shown as it was; the next render tries again
      }
    }, 3000);
  }
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

function showRerunForm(visible) {
  rerunForm.hidden = !visible;
  rerunButton.setAttribute('aria-expanded', String(visible));
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
  for (const button of [cancelButton, deleteButton, retryButton, resumeButton, rerunButton]) button.hidden = true;
  showRerunForm(false);
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
  const answer = await cancelJob({ button: cancelButton, jobId, title: jobTitle(job), errorBox: actionError });
  if (answer === null) return;
  stopFollowing();
  try {
    show(await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`));
  } catch {
    show({ ...job, status: answer.status, revision: answer.revision, completedVariations: answer.completedVariations,
           cancelledAt: answer.cancelledAt }, { force: true });
  }
  if (answer.status === 'completed') showMessage(actionError, 'It had already finished, so nothing was cancelled.');
  if (!isFinal(job.status)) follow();
});

async function reopen(button, action, busyLabel) {
  const next = await reopenJob({ button, jobId, action, busyLabel, errorBox: actionError });
  if (next === null) return;
  stopFollowing();
  jobStarted(jobId);
  show(next, { force: true });
  follow();
}

retryButton.addEventListener('click', () => reopen(retryButton, 'retry', 'Retrying…'));
resumeButton.addEventListener('click', () => reopen(resumeButton, 'resume', 'Resuming…'));

rerunButton.addEventListener('click', () => {
  showRerunForm(rerunForm.hidden);
  if (!rerunForm.hidden) document.getElementById('rerun-name').focus();
});
document.getElementById('rerun-close').addEventListener('click', () => {
  showRerunForm(false);
  rerunButton.focus();
});

rerunForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const errorBox = document.getElementById('rerun-error');
  const count = Number(rerunVariations.value);
  const max = Number(rerunVariations.max);
  if (!Number.isInteger(count) || count < 1 || count > max) {
    showMessage(errorBox, `Choose from 1 to ${max} variations per video.`);
    rerunVariations.focus();
    return;
  }
  const options = { variations: count };
  const name = document.getElementById('rerun-name').value.trim();
  const seed = document.getElementById('rerun-seed').value.trim();
  if (name) options.name = name;
  if (seed) options.seed = seed;
  const created = await rerunJob({ button: document.getElementById('rerun-submit'), jobId, options, errorBox });
  if (created !== null) jobStarted(created.jobId);
  if (created !== null) window.location.assign(`/jobs/${encodeURIComponent(created.jobId)}`);
});

deleteButton.addEventListener('click', async () => {
  if (await deleteJob({ button: deleteButton, jobId, title: jobTitle(job), madeAny: job.completedVariations > 0, errorBox: actionError })) {
    window.location.assign('/');
  }
});

setUpNotifications();
render();
follow();
