// Calls to the JSON API with the browser's cookie session. Requests that
// change something carry the page's CSRF token, as the API requires.

export const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export class UploadStopped extends ApiError {}

// The API's error sentences start with whatever they name (often a file
// name, which must stay as it is); only the full stop is added.
export function asSentence(text) {
  const trimmed = String(text).trim();
  return !trimmed || /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

export function signInAgain() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/login?next=${encodeURIComponent(next)}`);
}

function errorFrom(status, body) {
  if (body && typeof body.error === 'string') return new ApiError(asSentence(body.error), status, body);
  return new ApiError(`The server answered with an error (HTTP ${status}). Please try again.`, status, body);
}

// `payload`, when given, is sent as JSON.
export async function apiRequest(method, url, payload) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken;
  const options = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(payload);
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new ApiError('The server could not be reached. Check the connection and try again.', 0, null);
  }
  if (response.status === 401) {
    signInAgain();
    throw new ApiError('Your session has ended. Please sign in again.', 401, null);
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, body);
  return body;
}

export const getJSON = (url) => apiRequest('GET', url);

// POST a multipart form with upload progress (fetch cannot report it).
// Returns { promise, abort }.
export function uploadForm(url, formData, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', url);
    xhr.setRequestHeader('X-CSRF-Token', csrfToken);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.upload.addEventListener('load', () => onProgress(1, 1));
    xhr.addEventListener('load', () => {
      if (xhr.status === 401) {
        signInAgain();
        reject(new ApiError('Your session has ended. Please sign in again.', 401, null));
      } else if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
      } else {
        reject(errorFrom(xhr.status, xhr.response));
      }
    });
    xhr.addEventListener('error', () => reject(
      new ApiError('The upload was interrupted. Check the connection and try again.', 0, null)));
    xhr.addEventListener('abort', () => reject(new UploadStopped('The upload was stopped.', 0, null)));
    xhr.send(formData);
  });
  return { promise, abort: () => xhr.abort() };
}
