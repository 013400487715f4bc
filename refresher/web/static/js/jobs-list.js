// The jobs list, newest first. Every card stays live: the whole list is
// polled every few seconds, and the jobs being processed also get a stream of
// events (a few at a time, so that uploads and previews keep connections).

import { asSentence, getJSON } from './api.js';
import { cancelJob, deleteJob } from './actions.js';
import { hasDownload, isFinal, isStale, jobTitle, plural, setTime } from './format.js';
import { streamJob } from './live.js';
import { showProgressInTitle } from './notify.js';
import { renderBadge, renderProgress, showMessage } from './status.js';

const MAX_STREAMS = 2;
const POLL_WHILE_BUSY_MS = 3000;
const POLL_WHILE_IDLE_MS = 15000;

function summaryOf(detail) {
  return {
    id: detail.jobId,
    name: detail.name,
    status: detail.status,
    revision: detail.revision,
    totalVideos: detail.totalVideos,
    totalVariations: detail.totalVariations,
    completedVariations: detail.completedVariations,
    overallProgress: detail.overallProgress,
    fileNames: detail.files.map((file) => file.name),
    thumbnailUrl: detail.thumbnailUrl,
    createdAt: detail.createdAt,
    error: detail.error,
  };
}

export function setUpJobsList(initialJobs) {
  const list = document.getElementById('job-list');
  const empty = document.getElementById('jobs-empty');
  const listMessage = document.getElementById('jobs-message');
  const template = document.getElementById('job-card-template');
  const cards = new Map();
  const streams = new Map();
  const streamless = new Set();
  let timer = null;

  function renderCard(entry) {
    const { card, job } = entry;
    const page = `/jobs/${encodeURIComponent(job.id)}`;
    const title = card.querySelector('.job-title');
    title.textContent = jobTitle(job);
    title.title = job.fileNames.join(', ');
    title.href = page;
    card.querySelector('.job-thumb').href = page;
    card.querySelector('[data-action="open"]').href = page;
    card.querySelector('[data-action="open"]').setAttribute('aria-label', `Open ${jobTitle(job)}`);

    const image = card.querySelector('.job-thumb img');
    if (job.thumbnailUrl && image.getAttribute('src') !== job.thumbnailUrl) {
      image.src = job.thumbnailUrl;
      image.hidden = false;
    }
    card.querySelector('.job-counts').textContent =
      `${plural(job.totalVideos, 'video')} · ${plural(job.totalVariations, 'variation')}`;
    setTime(card.querySelector('.job-created'), job.createdAt);
    renderBadge(card.querySelector('.badge'), job);
    card.dataset.status = job.status;

    const progress = card.querySelector('.job-progress');
    progress.hidden = isFinal(job.status);
    renderProgress(progress, job.overallProgress,
      `${job.overallProgress} % · ${job.completedVariations} of ${job.totalVariations} ready`);
    showMessage(card.querySelector('.job-error'), job.error ? asSentence(job.error) : '');

    const download = card.querySelector('[data-action="download"]');
    download.hidden = !hasDownload(job);
    download.href = `/api/jobs/${encodeURIComponent(job.id)}/download`;
    download.setAttribute('aria-label', `Download all variations of ${jobTitle(job)} as a ZIP`);
    card.querySelector('[data-action="cancel"]').hidden = isFinal(job.status);
    card.querySelector('[data-action="delete"]').hidden = !isFinal(job.status);
  }

  function createCard(job) {
    const card = template.content.firstElementChild.cloneNode(true);
    const entry = { card, job };
    card.dataset.jobId = job.id;
    const image = card.querySelector('.job-thumb img');
    image.addEventListener('error', () => { image.hidden = true; });
    const actionError = card.querySelector('.job-action-error');

    const cancel = card.querySelector('[data-action="cancel"]');
    cancel.addEventListener('click', async () => {
      const answer = await cancelJob({ button: cancel, jobId: entry.job.id, title: jobTitle(entry.job), errorBox: actionError });
      if (answer === null) {
        refreshSoon();
        return;
      }
      update({ ...entry.job, status: answer.status, revision: answer.revision,
               completedVariations: answer.completedVariations, totalVariations: answer.totalVariations },
             { force: true });
      if (answer.status === 'completed') showMessage(actionError, 'It had already finished, so nothing was cancelled.');
      refreshSoon();
    });

    const remove = card.querySelector('[data-action="delete"]');
    remove.addEventListener('click', async () => {
      if (await deleteJob({ button: remove, jobId: entry.job.id, title: jobTitle(entry.job), madeAny: entry.job.completedVariations > 0, errorBox: actionError })) {
        const next = card.nextElementSibling ?? card.previousElementSibling;
        removeCard(entry.job.id);
        (next?.querySelector('.job-title') ?? document.getElementById('jobs-heading')).focus();
      }
    });

    cards.set(job.id, entry);
    renderCard(entry);
    return entry;
  }

  function update(job, { force = false } = {}) {
    const entry = cards.get(job.id);
    if (!entry) return;
    if (!force && isStale(entry.job, job)) return;
    entry.job = { ...entry.job, ...job };
    renderCard(entry);
    showProgressInTitle([...cards.values()].map((each) => each.job));
    if (isFinal(entry.job.status)) closeStream(job.id);
  }

  function removeCard(jobId) {
    closeStream(jobId);
    cards.get(jobId)?.card.remove();
    cards.delete(jobId);
    showProgressInTitle([...cards.values()].map((each) => each.job));
    empty.hidden = cards.size > 0;
  }

  function closeStream(jobId) {
    streams.get(jobId)?.();
    streams.delete(jobId);
  }

  function openStreams() {
    for (const { job } of cards.values()) {
      if (streams.size >= MAX_STREAMS) return;
      if (job.status !== 'processing' || streams.has(job.id) || streamless.has(job.id)) continue;
      const close = streamJob(job.id, {
        onUpdate: (detail) => update(summaryOf(detail)),
        onGone: () => removeCard(job.id),
        onFailure: () => {
          streams.delete(job.id);
          streamless.add(job.id);
        },
      });
      streams.set(job.id, close);
    }
  }

  // Put the cards in the server's order, creating and removing as needed,
  // moving only what must move (a moved element loses keyboard focus).
  function showJobs(jobs, { newJobId = null } = {}) {
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      seen.add(job.id);
      const entry = cards.get(job.id) ?? createCard(job);
      update(job);
      const expectedNext = previous ? previous.nextElementSibling : list.firstElementChild;
      if (expectedNext !== entry.card) list.insertBefore(entry.card, expectedNext);
      if (job.id === newJobId) entry.card.classList.add('is-new');
      previous = entry.card;
    }
    for (const jobId of [...cards.keys()]) if (!seen.has(jobId)) removeCard(jobId);
    empty.hidden = cards.size > 0;
    openStreams();
  }

  function anyUnfinished() {
    return [...cards.values()].some(({ job }) => !isFinal(job.status));
  }

  async function refresh(options) {
    clearTimeout(timer);
    try {
      showJobs(await getJSON('/api/jobs'), options);
      showMessage(listMessage, '');
    } catch (error) {
      showMessage(listMessage, `Could not refresh the list: ${error.message}`);
    }
    const wait = anyUnfinished() && !document.hidden ? POLL_WHILE_BUSY_MS : POLL_WHILE_IDLE_MS;
    timer = setTimeout(refresh, wait);
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });

  showJobs(Array.isArray(initialJobs) ? initialJobs : []);
  timer = setTimeout(refresh, anyUnfinished() ? POLL_WHILE_BUSY_MS : POLL_WHILE_IDLE_MS);

  return { jobCreated: (jobId) => refresh({ newJobId: jobId }) };
}
