// Pages that show something in motion (a running rollout) reload every data-every seconds
// while they are on screen: progress without a script framework or a second API.
const every = Number(document.currentScript.dataset.every || 10) * 1000;
setInterval(() => {
  if (document.visibilityState === 'visible') location.reload();
}, every);
