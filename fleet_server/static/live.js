// The live readings page: server-sent events from /api/v1/readings/stream, newest on top.
const table = document.getElementById('feed');
const source = new EventSource('/api/v1/readings/stream');
source.onmessage = (event) => {
  const r = JSON.parse(event.data);
  const row = table.insertRow(1);
  for (const text of [r.observed_at, r.device_id, r.sign_type,
                      r.value === null ? '' : r.value + ' ' + r.unit, r.confidence.toFixed(2)]) {
    // textContent, never innerHTML: a reading's fields come from a device.
    row.insertCell().textContent = text;
  }
};
// An EventSource retries a stream that ended, but gives up on an error answer (503 when the
// server is at http.max_live_streams, 401 when the session ended): try the page again later.
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 30000);
};
