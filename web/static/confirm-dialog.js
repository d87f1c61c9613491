/* "Are you sure?" for actions that cannot be taken back (never for the emergency stop). */

import { $ } from "./dom.js";

/** Resolves true when confirmed. Live updates never touch the dialog while it is open. */
export function confirmAction(title, message, confirmLabel) {
  const dialog = $("confirm-dialog");
  if (dialog.open) return Promise.resolve(false); // one question at a time
  $("confirm-title").textContent = title;
  $("confirm-message").textContent = message;
  $("confirm-yes").textContent = confirmLabel;
  if (typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(`${title}\n${message}`));
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok");
    };
    dialog.addEventListener("close", done);
    dialog.showModal();
    $("confirm-no").focus();
  });
}
