/* Emergency stop: no confirmation, and over HTTP when the WebSocket is down. */

import { toast } from "./notifications.js";

async function viaHttp(name) {
  const response = await fetch(`/api/printers/${encodeURIComponent(name)}/emergency_stop`, { method: "POST" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
  }
}

/** Stop each named printer now; every outcome is a toast. */
export async function emergencyStop(client, names) {
  if (!names.length) {
    toast("No printers to stop.", "warning");
    return;
  }
  for (const name of names) {
    try {
      if (client.open) {
        try {
          await client.request({ type: "emergency_stop", printer: name }, 5000);
        } catch (err) {
          if (err.code) throw err; // the gateway answered: the printer cannot be stopped
          await viaHttp(name);
        }
      } else {
        await viaHttp(name);
      }
      toast(`${name}: emergency stop sent.`, "critical");
    } catch (err) {
      toast(`${name}: emergency stop failed: ${err.message}`, "error");
    }
  }
}
