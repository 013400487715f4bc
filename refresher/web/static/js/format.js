// How numbers, times and statuses read on screen.

export function formatBytes(bytes) {
  if (bytes == null) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds == null) return '';
  const whole = Math.round(seconds);
  const minutes = Math.floor(whole / 60);
  const rest = String(whole % 60).padStart(2, '0');
  return `${minutes}:${rest}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const fullTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

// Fills a <time> element: a short local time, the full one on hover.
export function setTime(element, iso) {
  if (!iso) {
    element.textContent = '—';
    element.removeAttribute('datetime');
    return;
  }
  const date = new Date(iso);
  element.dateTime = iso;
  element.textContent = timeFormat.format(date);
  element.title = fullTimeFormat.format(date);
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

// The job's name; for a job (or summary) from before names: "summer.mp4",
// "summer.mp4 and 2 more"
export function jobTitle(job) {
  if (job.name) return job.name;
  const names = job.fileNames ?? (job.files ?? []).map((file) => file.name);
  if (names.length === 0) return 'Untitled job';
  if (names.length === 1) return names[0];
  return `${names[0]} and ${names.length - 1} more`;
}

export const FINAL_STATUSES = new Set(['completed', 'failed', 'cancelled']);

export function isFinal(status) {
  return FINAL_STATUSES.has(status);
}

const STATUS_ORDER = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };

// An answer that left the server before the one already shown must not undo
// it. Every answer carries the job's revision, which grows with each change of
// the job: a lower one is older, even if its status looks further along (a
// finished job goes back to the queue when it is retried or resumed). Only an
// answer without one (a page from before revisions) is judged by its status.
export function isStale(shown, incoming) {
  if (Number.isInteger(shown.revision) && Number.isInteger(incoming.revision)) {
    return incoming.revision < shown.revision;
  }
  return STATUS_ORDER[incoming.status] < STATUS_ORDER[shown.status]
    || (incoming.status === shown.status && incoming.overallProgress < shown.overallProgress);
}

// A ZIP exists once at least one variation is finished and the job has ended.
export function hasDownload(job) {
  return job.status === 'completed' || (isFinal(job.status) && job.completedVariations > 0);
}

export function statusText(job) {
  switch (job.status) {
    case 'queued': return 'Queued';
    case 'processing': return 'Processing';
    case 'completed': return 'Completed';
    case 'failed': return 'Failed';
    case 'cancelled': return `Cancelled (${job.completedVariations}/${job.totalVariations})`;
    default: return job.status;
  }
}
