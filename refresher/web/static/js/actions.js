// Cancelling and deleting a job, from the list or from the job page: ask
// first, show the work in progress on the button, and on failure say why and
// give the button back.

import { apiRequest } from './api.js';
import { confirmAction } from './confirm.js';
import { showMessage } from './status.js';

async function withBusyButton(button, busyLabel, work) {
  const label = button.querySelector('span') ?? button;
  const idleLabel = label.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  label.textContent = busyLabel;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    label.textContent = idleLabel;
  }
}

// Resolves with the API's answer ({status, completedVariations, ...}),
// or null when the person changed their mind or the request failed.
export async function cancelJob({ button, jobId, title, errorBox }) {
  const confirmed = await confirmAction({
    title: 'Cancel this job?',
    message: `${title}: variations that are already finished are kept and stay downloadable; the rest are not made.`,
    confirmLabel: 'Cancel job',
    dismissLabel: 'Keep it running',
  });
  if (!confirmed) return null;
  showMessage(errorBox, '');
  try {
    return await withBusyButton(button, 'Cancelling…',
      () => apiRequest('POST', `/api/jobs/${encodeURIComponent(jobId)}/cancel`));
  } catch (error) {
    showMessage(errorBox, `Could not cancel: ${error.message}`);
    button.focus();
    return null;
  }
}

// Resolves true once the job is gone.
export async function deleteJob({ button, jobId, title, madeAny, errorBox }) {
  const confirmed = await confirmAction({
    title: 'Delete this job?',
    message: madeAny
      ? `${title}: its variations and the ZIP are deleted for good.`
      : `${title}: no variation was made; the job and its videos are deleted for good.`,
    confirmLabel: 'Delete job',
    dismissLabel: 'Keep it',
  });
  if (!confirmed) return false;
  showMessage(errorBox, '');
  try {
    await withBusyButton(button, 'Deleting…',
      () => apiRequest('DELETE', `/api/jobs/${encodeURIComponent(jobId)}`));
    return true;
  } catch (error) {
    showMessage(errorBox, `Could not delete: ${error.message}`);
    button.focus();
    return false;
  }
}

// Retry (failed variations) or resume (a cancelled job): resolves with the
// job as the API now shows it, or null when the request failed.
export async function reopenJob({ button, jobId, action, busyLabel, errorBox }) {
  showMessage(errorBox, '');
  try {
    return await withBusyButton(button, busyLabel,
      () => apiRequest('POST', `/api/jobs/${encodeURIComponent(jobId)}/${action}`));
  } catch (error) {
    showMessage(errorBox, `Could not ${action}: ${error.message}`);
    button.focus();
    return null;
  }
}

// A new job from the same sources; resolves with it, or null on failure.
export async function rerunJob({ button, jobId, options, errorBox }) {
  showMessage(errorBox, '');
  try {
    return await withBusyButton(button, 'Starting…',
      () => apiRequest('POST', `/api/jobs/${encodeURIComponent(jobId)}/rerun`, options));
  } catch (error) {
    showMessage(errorBox, `Could not start it: ${error.message}`);
    return null;
  }
}
