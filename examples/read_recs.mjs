// Read a user's recommendations from Redis in Node.js, with no dependency: a few lines
// of the Redis protocol (RESP) over a TCP socket. A site would use its Redis client
// (node-redis, ioredis) the same way: GET pulse:user:{<user_id>}:recs, parse the JSON.
//
//   node examples/read_recs.mjs u42 [redis://127.0.0.1:6379/0] [prefix]
//
// Prints the list's items, one "item_id<TAB>score<TAB>reason" a line; exits 1 when the
// user has no list (Pulse has not seen the user, or the keys expired).
import net from "node:net";

const [userId, url = "redis://127.0.0.1:6379/0", prefix = "pulse"] = process.argv.slice(2);
if (!userId) {
  console.error("usage: node read_recs.mjs USER_ID [redis://host:port/db] [prefix]");
  process.exit(2);
}
const { hostname, port, pathname, username, password } = new URL(url);

// One RESP command: an array of bulk strings.
const command = (...args) =>
  `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");

// Parse one reply from buf at offset; returns [value, next offset] or null when incomplete.
function parse(buf, at = 0) {
  const end = buf.indexOf("\r\n", at);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString("utf8", at + 1, end);
  if (type === "+") return [line, end + 2];
  if (type === "-") throw new Error(`Redis answered: ${line}`);
  if (type === ":") return [Number(line), end + 2];
  if (type === "$") {
    const n = Number(line);
    if (n < 0) return [null, end + 2];
    if (buf.length < end + 2 + n + 2) return null;
    return [buf.toString("utf8", end + 2, end + 2 + n), end + 2 + n + 2];
  }
  throw new Error(`unexpected reply type ${type}`);
}

const commands = [];
if (password) commands.push(command("AUTH", ...(username ? [decodeURIComponent(username)] : []), decodeURIComponent(password)));
const db = pathname.replace("/", "") || "0";
commands.push(command("SELECT", db));
commands.push(command("GET", `${prefix}:user:{${userId}}:recs`));

const socket = net.createConnection({ host: hostname || "127.0.0.1", port: Number(port || 6379) });
let buf = Buffer.alloc(0);
const replies = [];
socket.on("connect", () => socket.write(commands.join("")));
socket.on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  let at = 0, reply;
  while (replies.length < commands.length && (reply = parse(buf, at))) {
    replies.push(reply[0]);
    at = reply[1];
  }
  buf = buf.subarray(at);
  if (replies.length < commands.length) return;
  socket.end();
  const value = replies[replies.length - 1];
  if (value === null) {
    console.error(`no recommendations for user ${userId}`);
    process.exit(1);
  }
  const recs = JSON.parse(value);
  for (const item of recs.items) console.log(`${item.item_id}\t${item.score}\t${item.reason}`);
});
socket.on("error", (err) => {
  console.error(`cannot reach Redis at ${hostname}:${port || 6379}/${db}: ${err.message}`);
  process.exit(2);
});
