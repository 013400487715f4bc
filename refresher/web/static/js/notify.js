// Browser notifications when a job this browser started ends, while any page
// of the service is open — shown once, however many tabs are open: only the
// tab that holds a Web Lock watches (another takes over when it closes), and
// what was announced is remembered in localStorage. The person is offered
// notifications once, after their first job; the answer is remembered, and
// the setting in the top bar changes it.

import { getJSON } from './api.js';
import { isFinal, jobTitle } from './format.js';

const CHOICE_KEY = 'refresher.notifications'; // 'on' or 'off'; absent: not offered yet
const JOBS_KEY = 'refresher.notifications.jobs'; // { jobId: 'waiting' | 'told' }
const MAX_JOBS = 100;
const POLL_MS = 2000;
const IDLE_POLL_MS = 5000;
const RECENT_MS = 15 * 60 * 1000; // a job that ended this long before it was seen (no page open) is not announced

const supported = 'Notification' in window;
let watching = false;

function stored(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null; // storage blocked: nothing is remembered, nothing is offered
  }
}

function store(key, value) {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // storage blocked or full: the choice lasts as long as the page
  }
}

function choice() {
  return stored(CHOICE_KEY);
}

function enabled() {
  return supported && choice() === 'on' && Notification.permission === 'granted';
}

function trackedJobs() {
  try {
    const jobs = JSON.parse(stored(JOBS_KEY) ?? '{}');
    return jobs && typeof jobs === 'object' ? jobs : {};
  } catch {
    return {};
  }
}

function keepTracked(jobs) {
  const ids = Object.keys(jobs);
  for (const id of ids.slice(0, Math.max(0, ids.length - MAX_JOBS))) delete jobs[id];
  store(JOBS_KEY, JSON.stringify(jobs));
}

// How the job ended, in a few words: "12 of 12 variations ready", "cancelled: 4 of 12 kept".
export function outcome(job) {
  const made = `${job.completedVariations} of ${job.totalVariations}`;
  if (job.status === 'completed') return `${made} variations ready`;
  if (job.status === 'cancelled') return `cancelled: ${made} kept`;
  return job.completedVariations > 0 ? `failed: ${made} made` : 'failed: no variation was made';
}

function announce(job) {
  const page = `/jobs/${encodeURIComponent(job.jobId)}`;
  const icon = document.querySelector('link[rel="icon"]')?.href;
  const shown = new Notification(jobTitle(job), { body: outcome(job), tag: `job-${job.jobId}`, icon });
  shown.onclick = () => {
    window.focus();
    if (window.location.pathname !== page) window.location.assign(page);
    shown.close();
  };
}

async function look() {
  const jobs = trackedJobs();
  const waiting = Object.keys(jobs).filter((id) => jobs[id] === 'waiting');
  for (const id of waiting) {
    let job;
    try {
      job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status === 404) {
        const now = trackedJobs();
        delete now[id];
        keepTracked(now);
      }
      continue;
    }
    if (!isFinal(job.status)) continue;
    const now = trackedJobs();
    if (now[id] !== 'waiting') continue;
    now[id] = 'told';
    keepTracked(now);
    const endedAt = Date.parse(job.finishedAt ?? job.cancelledAt ?? '') || Date.now();
    if (enabled() && Date.now() - endedAt < RECENT_MS) announce(job);
  }
  return waiting.length > 0;
}

let wake = () => {}; // look now (a job was started, notifications were turned on), in the tab that watches

function watch() {
  let timer = null;
  let looking = false;
  const loop = async () => {
    clearTimeout(timer);
    if (looking) return;
    looking = true;
    let busy = false;
    if (enabled()) busy = await look().catch(() => true);
    looking = false;
    timer = setTimeout(loop, busy ? POLL_MS : IDLE_POLL_MS);
  };
  wake = loop;
  window.addEventListener('storage', (event) => {
    if (event.key === JOBS_KEY || event.key === CHOICE_KEY) loop();
  });
  loop();
}

// Start watching the jobs this browser started (in the one tab that holds the lock).
function startWatching() {
  if (watching || !supported) return;
  watching = true;
  if (navigator.locks) {
    navigator.locks.request('refresher-job-notifications', () => new Promise(() => watch()));
  } else {
    watch();
  }
}

function setChoice(value) {
  store(CHOICE_KEY, value);
  syncSetting();
  wake();
}

async function askPermission() {
  const answer = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  setChoice(answer === 'granted' ? 'on' : 'off');
}

function syncSetting() {
  const box = document.getElementById('notify-setting');
  if (!box || !supported) return;
  box.closest('.notify-setting').hidden = false;
  box.checked = enabled();
  box.disabled = Notification.permission === 'denied';
  box.closest('.notify-setting').title = box.disabled
    ? 'Notifications are blocked in this browser’s site settings'
    : 'A notification when a job you started ends';
}

function offer() {
  if (document.getElementById('notify-offer')) return;
  const box = document.createElement('div');
  box.id = 'notify-offer';
  box.className = 'notify-offer card';
  box.setAttribute('role', 'region');
  box.setAttribute('aria-label', 'Notifications');
  const text = document.createElement('p');
  text.textContent = 'Get a browser notification when your jobs end?';
  const yes = document.createElement('button');
  yes.type = 'button';
  yes.className = 'btn btn-small btn-primary';
  yes.id = 'notify-accept';
  yes.textContent = 'Notify me';
  const no = document.createElement('button');
  no.type = 'button';
  no.className = 'btn btn-small btn-ghost';
  no.id = 'notify-decline';
  no.textContent = 'No thanks';
  yes.addEventListener('click', async () => {
    box.remove();
    await askPermission();
  });
  no.addEventListener('click', () => {
    box.remove();
    setChoice('off');
  });
  box.append(text, yes, no);
  const anchor = document.querySelector('.upload-card') ?? document.querySelector('.job-header');
  if (anchor) anchor.after(box);
  else document.getElementById('main').prepend(box);
}

// A job this browser just started (an upload, a rerun, a retry or resume):
// followed until it ends; the first one brings the offer, if it was never answered.
export function jobStarted(jobId) {
  const jobs = trackedJobs();
  delete jobs[jobId]; // to the end: the newest are kept
  jobs[jobId] = 'waiting';
  keepTracked(jobs);
  if (!supported) return;
  if (choice() === null && Notification.permission !== 'denied') offer();
  wake();
}

export function setUpNotifications() {
  const box = document.getElementById('notify-setting');
  if (box) {
    box.addEventListener('change', async () => {
      if (!box.checked) setChoice('off');
      else await askPermission();
    });
  }
  // another tab's choice shows here too
  window.addEventListener('storage', (event) => {
    if (event.key === CHOICE_KEY) syncSetting();
  });
  syncSetting();
  startWatching(); // it looks only while notifications are on
}

// The tab's title shows how far the running jobs are: "42 % · Jobs · Video Refresher".
const plainTitle = document.title;

export function showProgressInTitle(jobs) {
  const running = jobs.filter((job) => !isFinal(job.status));
  if (running.length === 0) {
    document.title = plainTitle;
    return;
  }
  const percent = Math.round(running.reduce((sum, job) => sum + (job.overallProgress ?? 0), 0) / running.length);
  const count = running.length > 1 ? ` · ${running.length} jobs` : '';
  document.title = `${percent} %${count} · ${plainTitle}`;
}
