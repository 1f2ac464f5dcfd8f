// Writes to a chorus room with the official JavaScript automerge, the way
// docs/data-model.md ("Writing from other languages") shows, and the naive
// way (plain JS strings, which automerge 3 stores as text objects).
//
//   node interop.mjs <api base URL> <room>
//
// Prints one JSON line with what it saw; exits 1 on any unexpected answer.
// node/tests/js_interop.rs runs it against a daemon and checks the room.
import * as A from "@automerge/automerge";

const [api, room] = process.argv.slice(2);
if (!api || !room) {
  console.error("usage: node interop.mjs <api base URL> <room>");
  process.exit(2);
}
const seen = {};
const problems = [];

async function answer(res) {
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: text };
  }
}

// --- the documented way: exactly the example in docs/data-model.md ---
const url = `${api}/v1/rooms/${room}/automerge`;
const S = (s) => new A.ImmutableString(s);
const stamp = (ms) => ms.toString(16).padStart(16, "0") + "-00000000-" + "1".padStart(16, "0");
let doc = A.load(new Uint8Array(await (await fetch(url)).arrayBuffer()));
doc = A.change(doc, (d) => {
  d.sessions["s-js"] = {
    user: S("bob"), role: S("speaker"), region: S("eu-west"),
    joined_at: Date.now(), owner: S("1:sfu-1"),
    state: S(`${stamp(Date.now())}|"connecting"`), tracks: {},
  };
  d.counters.joins.increment(1);
});
const res = await fetch(url, {
  method: "POST",
  headers: { "content-type": "application/octet-stream" },
  body: A.save(doc),
});
// --- end of the example ---
const documented = await answer(res);
seen.documented = documented;
if (documented.status !== 200) problems.push(`the documented join: expected 200, got ${documented.status}`);

// --- the naive way: plain strings become text objects ---
doc = A.load(new Uint8Array(await (await fetch(url)).arrayBuffer()));
doc = A.change(doc, (d) => {
  d.sessions["s-js-naive"] = {
    user: "carol", role: "speaker", region: "eu-west",
    joined_at: Date.now(), owner: "1:sfu-1",
    state: `${stamp(Date.now())}|"connecting"`, tracks: {},
  };
  d.counters.joins.increment(1);
});
const naive = await answer(
  await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: A.save(doc),
  }),
);
seen.naive = naive;
const message = typeof naive.body === "object" ? String(naive.body.message ?? "") : "";
if (naive.status !== 422) problems.push(`the naive join: expected 422, got ${naive.status}`);
if (naive.body?.code !== "refused") problems.push(`the naive join: expected code "refused"`);
if (!message.includes("sessions/s-js-naive/")) problems.push("the naive join: the refusal does not name the session's path");
if (!message.includes("text object")) problems.push("the naive join: the refusal does not name the text object");

seen.problems = problems;
console.log(JSON.stringify(seen));
process.exit(problems.length === 0 ? 0 : 1);
