// The seeds' echo server: every message comes back as `Server received: <msg>`.
// As in the seed, except that it does not log each message (console.log per
// message would measure the terminal, not the server).
"use strict";

const { listen } = require("./common");

listen(() => (ws) => {
  ws.on("message", (message) => {
    ws.send(`Server received: ${message}`);
  });
  ws.on("error", () => {});
});
