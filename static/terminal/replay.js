// The replay page: asciinema-player shows a recorded terminal from its asciicast file.
(function () {
  "use strict";
  const player = document.getElementById("player");
  AsciinemaPlayer.create(player.dataset.src, player, { fit: "width", idleTimeLimit: 2, preload: true });
})();
