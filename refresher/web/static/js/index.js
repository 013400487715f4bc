// The start page: the upload form above the live jobs list.

import { setUpJobsList } from './jobs-list.js';
import { jobStarted, setUpNotifications } from './notify.js';
import { setUpUploadForm } from './upload.js';

const initialJobs = JSON.parse(document.getElementById('initial-jobs').textContent);
setUpNotifications();
const jobs = setUpJobsList(initialJobs);
setUpUploadForm({
  onJobCreated: (job) => {
    jobs.jobCreated(job.jobId);
    jobStarted(job.jobId);
  },
});
