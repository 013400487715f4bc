// The upload form: choose or drop videos, check what can be checked here
// (type, size, count), then send them with a real progress bar. The server
// has the last word on each file, and its answer is shown as it is.
//
// Each video goes up as a resumable upload (resumable.js), one after the
// other, its bytes and speed shown beside it; once all are in, one request
// makes the job. Where the browser cannot (no tus support), one multipart
// request carries them all.

import { UploadStopped, apiRequest, uploadForm } from './api.js';
import { formatBytes, plural } from './format.js';
import { resumableUploads, sendFile } from './resumable.js';
import { renderProgress, showMessage } from './status.js';

const VIDEO_EXTENSIONS = ['.mp4', '.mov', '.m4v'];
const VIDEO_TYPES = ['video/mp4', 'video/quicktime'];

function looksLikeVideo(file) {
  const name = file.name.toLowerCase();
  return VIDEO_TYPES.includes(file.type) || VIDEO_EXTENSIONS.some((extension) => name.endsWith(extension));
}

function sameFile(a, b) {
  return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;
}

export function setUpUploadForm({ onJobCreated }) {
  const form = document.getElementById('upload-form');
  const input = document.getElementById('videos');
  const dropzone = document.getElementById('dropzone');
  const chosenList = document.getElementById('chosen-files');
  const chosenTemplate = document.getElementById('chosen-file-template');
  const message = document.getElementById('upload-message');
  const variations = document.getElementById('variations');
  const seed = document.getElementById('seed');
  const jobName = document.getElementById('job-name');
  const submit = document.getElementById('upload-submit');
  const stop = document.getElementById('upload-abort');
  const progressBox = document.getElementById('upload-progress');
  const summary = document.getElementById('upload-summary');
  const maxFiles = Number(form.dataset.maxFiles);
  const maxFileBytes = Number(form.dataset.maxFileBytes);
  const maxVariations = Number(form.dataset.maxVariations);

  let chosen = [];
  let upload = null;
  let refusedName = null;  // the file the server refused last, marked in the list
  const sentLines = new Map();  // file → what of it has gone up, e.g. "3.1 MB of 12 MB · 2.4 MB/s"

  function say(kind, lines) {
    const texts = [].concat(lines).filter(Boolean);
    message.className = `alert alert-${kind}`;
    message.replaceChildren();
    if (texts.length === 1) {
      message.textContent = texts[0];
    } else {
      const list = document.createElement('ul');
      for (const text of texts) {
        const item = document.createElement('li');
        item.textContent = text;
        list.append(item);
      }
      message.append(list);
    }
    message.hidden = texts.length === 0;
  }

  function variationCount() {
    const value = Number(variations.value);
    return Number.isInteger(value) && value >= 1 && value <= maxVariations ? value : null;
  }

  function renderSummary() {
    const count = variationCount();
    if (chosen.length === 0) {
      summary.textContent = '';
    } else {
      const bytes = chosen.reduce((total, file) => total + file.size, 0);
      const made = count ? ` → ${plural(chosen.length * count, 'new video')}` : '';
      summary.textContent = `${plural(chosen.length, 'video')} · ${formatBytes(bytes)}${made}`;
    }
    submit.disabled = upload !== null || chosen.length === 0;
  }

  function renderChosen() {
    chosenList.replaceChildren();
    chosen.forEach((file, position) => {
      const item = chosenTemplate.content.firstElementChild.cloneNode(true);
      item.querySelector('.chosen-name').textContent = file.name;
      item.querySelector('.chosen-name').title = file.name;
      item.querySelector('.chosen-size').textContent = formatBytes(file.size);
      item.querySelector('.chosen-sent').textContent = sentLines.get(file) ?? '';
      const refused = file.name === refusedName;
      item.classList.toggle('is-refused', refused);
      item.querySelector('.chosen-problem').hidden = !refused;
      if (refused) item.querySelector('.chosen-name').title = `${file.name}: not accepted (see the message above)`;
      const remove = item.querySelector('.chosen-remove');
      remove.setAttribute('aria-label', `Remove ${file.name}`);
      remove.disabled = upload !== null;
      remove.addEventListener('click', () => {
        chosen.splice(position, 1);
        renderChosen();
        const next = chosenList.querySelectorAll('.chosen-remove')[Math.min(position, chosen.length - 1)];
        (next ?? input).focus();
      });
      chosenList.append(item);
    });
    renderSummary();
  }

  function addFiles(files) {
    const problems = [];
    for (const file of files) {
      if (!looksLikeVideo(file)) {
        problems.push(`${file.name} is not an MP4 or MOV video.`);
      } else if (file.size === 0) {
        problems.push(`${file.name} is empty.`);
      } else if (file.size > maxFileBytes) {
        problems.push(`${file.name} is ${formatBytes(file.size)}, more than the limit of ${formatBytes(maxFileBytes)} per video.`);
      } else if (chosen.some((other) => sameFile(other, file))) {
        problems.push(`${file.name} is already in the list.`);
      } else if (chosen.length >= maxFiles) {
        problems.push(`${file.name} was left out: a job takes at most ${maxFiles} videos.`);
      } else {
        chosen.push(file);
      }
    }
    say('error', problems);
    renderChosen();
  }

  function setUploading(active) {
    for (const control of [input, variations, seed, jobName]) control.disabled = active;
    for (const remove of chosenList.querySelectorAll('.chosen-remove')) remove.disabled = active;
    dropzone.classList.toggle('is-disabled', active);
    stop.hidden = !active;
    progressBox.hidden = !active;
    renderSummary();
  }

  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });

  for (const type of ['dragenter', 'dragover']) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      if (upload === null) dropzone.classList.add('is-dragging');
    });
  }
  dropzone.addEventListener('dragleave', (event) => {
    if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove('is-dragging');
  });
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropzone.classList.remove('is-dragging');
    if (upload === null && event.dataTransfer) addFiles(event.dataTransfer.files);
  });
  // A file dropped next to the drop zone must not replace the page.
  for (const type of ['dragover', 'drop']) window.addEventListener(type, (event) => event.preventDefault());

  variations.addEventListener('input', renderSummary);

  stop.addEventListener('click', () => upload?.abort());

  window.addEventListener('beforeunload', (event) => {
    if (upload !== null) event.preventDefault();
  });

  function showSent(file, line) {
    sentLines.set(file, line);
    const position = chosen.indexOf(file);
    const item = chosenList.children[position];
    if (item) item.querySelector('.chosen-sent').textContent = line;
  }

  // One resumable upload per file, in turn; then the job. Returns { promise, abort }.
  function sendEach(files, fields) {
    const total = files.reduce((sum, file) => sum + file.size, 0);
    let current = null;
    let stopped = false;
    const promise = (async () => {
      const ids = [];
      let before = 0;
      for (const file of files) {
        const startedAt = performance.now();
        let firstSeen = null;
        current = sendFile(form.dataset.uploadsUrl, file, (sent) => {
          firstSeen ??= sent;  // a resumed upload starts where it stopped
          const seconds = (performance.now() - startedAt) / 1000;
          const speed = seconds > 0.5 ? ` · ${formatBytes((sent - firstSeen) / seconds)}/s` : '';
          showSent(file, `${formatBytes(sent)} of ${formatBytes(file.size)}${speed}`);
          const percent = total ? ((before + sent) / total) * 100 : 0;
          renderProgress(progressBox, percent,
            `Uploading · ${Math.floor(percent)} % · ${formatBytes(before + sent)} of ${formatBytes(total)} · ${file.name}`);
        });
        ids.push(await current.promise);
        showSent(file, `${formatBytes(file.size)} · uploaded`);
        before += file.size;
        if (stopped) throw new UploadStopped('The upload was stopped.', 0, null);
      }
      renderProgress(progressBox, 100, 'Uploaded · 100 % — creating the job…');
      return apiRequest('POST', form.action, { uploads: ids, ...fields });
    })();
    return { promise, abort: () => { stopped = true; current?.abort(); } };
  }

  // Every file in one multipart request (a browser without resumable uploads).
  function sendAsForm(files, fields) {
    const data = new FormData();
    for (const file of files) data.append('videos', file, file.name);
    for (const [key, value] of Object.entries(fields)) data.append(key, String(value));
    return uploadForm(form.action, data, (sent, total) => {
      const percent = total ? (sent / total) * 100 : 0;
      const label = sent >= total
        ? 'Uploaded · 100 % — checking the videos…'
        : `Uploading · ${Math.floor(percent)} % · ${formatBytes(sent)} of ${formatBytes(total)}`;
      renderProgress(progressBox, percent, label);
    });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (upload !== null || chosen.length === 0) return;
    const count = variationCount();
    if (count === null) {
      say('error', `Choose from 1 to ${maxVariations} variations per video.`);
      variations.focus();
      return;
    }
    const fields = { variations: count };
    if (seed.value.trim()) fields.seed = seed.value.trim();
    if (jobName.value.trim()) fields.name = jobName.value.trim();

    say('info', []);
    renderProgress(progressBox, 0, 'Starting the upload…');
    upload = resumableUploads() ? sendEach(chosen, fields) : sendAsForm(chosen, fields);
    setUploading(true);
    try {
      const job = await upload.promise;
      chosen = [];
      sentLines.clear();
      refusedName = null;
      seed.value = '';
      jobName.value = '';
      say('success', `Job created: ${plural(job.files.length, 'video')} × ${plural(job.variationsPerVideo, 'variation')}. Follow it in the list below.`);
      onJobCreated(job);
    } catch (error) {
      say(error instanceof UploadStopped ? 'info' : 'error', error.message);
      refusedName = typeof error.body?.file === 'string' ? error.body.file : null;
    } finally {
      upload = null;
      setUploading(false);
      renderChosen();
    }
  });

  renderChosen();
}
