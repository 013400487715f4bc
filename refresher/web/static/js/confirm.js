// A real modal question (<dialog>), answered with the keyboard or the mouse.
// Escape or the dismiss button mean "no".

const dialog = document.getElementById('confirm-dialog');

export function confirmAction({ title, message, confirmLabel, dismissLabel }) {
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-message').textContent = message;
  dialog.querySelector('#confirm-accept').textContent = confirmLabel;
  dialog.querySelector('#confirm-dismiss').textContent = dismissLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
    dialog.showModal();
  });
}
