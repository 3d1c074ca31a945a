// A wasi:http 0.2 handler in JavaScript, built with componentize-js (StarlingMonkey).
addEventListener("fetch", (event) => {
  const path = new URL(event.request.url).pathname;
  event.respondWith(
    new Response(`hello from js at ${path}\n`, {
      headers: { "content-type": "text/plain" },
    }),
  );
});
