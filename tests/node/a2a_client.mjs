// An independent A2A client for the tests: @a2a-js/sdk (1.x, v1.0 with the v0.3 compat layer).
//
//   node a2a_client.mjs COMMAND CARD_URL [options]
//
// COMMAND: card | send | stream | get | list | cancel
//   card    print the card as the SDK resolved it
//   send    SendMessage (--text, --metadata, --task, --context, --return-immediately)
//   stream  SendStreamingMessage; prints every event
//   get     GetTask --task ID
//   list    ListTasks (v1.0 only)
//   cancel  CancelTask --task ID; without --task it first sends a message with
//           returnImmediately (e.g. to a slow agent) and cancels the task it got
// Options: --transport JSONRPC|HTTP+JSON (preferred binding), --header 'Name: value' (repeatable,
//          sent on every call), --text T (default "hello"), --metadata JSON (request metadata),
//          --message-metadata JSON, --task ID, --context ID, --return-immediately,
//          --legacy-compat on|off (the SDK's v0.3 compat layer; default on),
//          --card-version V (the A2A-Version header of the card fetch; default 1.0 as the SDK
//          sends it; 0.3 gets a v0.3 card from a server that serves one per version, so that
//          the compat layer speaks v0.3).
//
// Output (stdout, one JSON object), in the v1.0 JSON form (protobuf JSON mapping):
//   {"result": ...}                      send: {"task": {...}} or {"message": {...}}; get/cancel: a task
//   {"events": [StreamResponse, ...], "times": [ms, ...]}
//                                        stream: {"task"|"message"|"statusUpdate"|"artifactUpdate": ...},
//                                        each with its arrival time (performance.now())
//   {"sent": {...}, "result": {...}}     cancel without --task
//   {"error": {"name", "message", "code", "reason", "statusCode"}}   an A2A / transport error
//                                        (exit code 0; code: the JSON-RPC code, statusCode: REST's)
// Exit code 2 on a usage error, 1 on anything unexpected (message on stderr).

import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { Message, StreamResponse, Task, ListTasksResponse } from "@a2a-js/sdk";
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from "@a2a-js/sdk/client";

const COMMANDS = new Set(["card", "send", "stream", "get", "list", "cancel"]);

function usage(message) {
  process.stderr.write(`a2a_client.mjs: ${message}\n`);
  process.exit(2);
}

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    transport: { type: "string" },
    header: { type: "string", multiple: true, default: [] },
    text: { type: "string", default: "hello" },
    metadata: { type: "string" },
    "message-metadata": { type: "string" },
    task: { type: "string" },
    context: { type: "string" },
    "return-immediately": { type: "boolean", default: false },
    "legacy-compat": { type: "string", default: "on" },
    "card-version": { type: "string" },
  },
});
const [command, cardUrl] = positionals;
if (!COMMANDS.has(command) || !cardUrl) usage("usage: COMMAND CARD_URL [options]");

function json(text, what) {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return usage(`${what} is not JSON`);
  }
}

const headers = {};
for (const line of opts.header) {
  const colon = line.indexOf(":");
  if (colon < 1) usage(`--header must be 'Name: value', got ${line}`);
  headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
}
const callOptions = Object.keys(headers).length ? { serviceParameters: headers } : undefined;

if (!["on", "off"].includes(opts["legacy-compat"])) usage("--legacy-compat must be on or off");
const cardVersion = opts["card-version"];
const cardFetch = cardVersion === undefined
  ? undefined
  : (url, init) => fetch(url, { ...init, headers: { ...init?.headers, "A2A-Version": cardVersion } });
const compat = { legacyCompat: { enabled: opts["legacy-compat"] === "on" } };
const factory = new ClientFactory(
  ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory(compat), new RestTransportFactory(compat)],
    cardResolver: new DefaultAgentCardResolver({ ...compat, fetchImpl: cardFetch }),
    ...(opts.transport ? { preferredTransports: [opts.transport] } : {}),
  }),
);

function sendRequest(returnImmediately) {
  return {
    tenant: "",
    message: {
      messageId: randomUUID(),
      contextId: opts.context ?? "",
      taskId: opts.task && command !== "cancel" ? opts.task : "",
      role: 1, // ROLE_USER
      parts: [{ content: { $case: "text", value: opts.text }, metadata: undefined, filename: "", mediaType: "" }],
      metadata: json(opts["message-metadata"], "--message-metadata"),
      extensions: [],
      referenceTaskIds: [],
    },
    configuration: {
      acceptedOutputModes: [],
      taskPushNotificationConfig: undefined,
      historyLength: undefined,
      returnImmediately,
    },
    metadata: json(opts.metadata, "--metadata"),
  };
}

function sendResult(result) {
  // SendMessageResult is a Task or a Message; a task has a status.
  return "status" in result ? { task: Task.toJSON(result) } : { message: Message.toJSON(result) };
}

function errorJson(err) {
  return {
    error: {
      name: err?.name ?? "Error",
      message: String(err?.message ?? err),
      // JSON-RPC errors carry the wire code as envelopeCode; REST errors an HTTP statusCode.
      code: [err?.code, err?.envelopeCode].find((c) => typeof c === "number") ?? null,
      reason: typeof err?.reason === "string" ? err.reason : null,
      statusCode: typeof err?.statusCode === "number" ? err.statusCode : null,
    },
  };
}

async function run() {
  // An empty path: CARD_URL is the card's full URL.
  const client = await factory.createFromUrl(cardUrl, "");
  switch (command) {
    case "card":
      return { result: await client.getAgentCard(callOptions) };
    case "send":
      return {
        result: sendResult(await client.sendMessage(sendRequest(opts["return-immediately"]), callOptions)),
      };
    case "stream": {
      const events = [];
      const times = []; // when each event arrived (ms, monotonic): streamed, not buffered
      for await (const event of client.sendMessageStream(sendRequest(false), callOptions)) {
        times.push(performance.now());
        events.push(StreamResponse.toJSON(event));
      }
      return { events, times };
    }
    case "get":
      if (!opts.task) usage("get needs --task");
      return { result: Task.toJSON(await client.getTask({ tenant: "", id: opts.task }, callOptions)) };
    case "list":
      return {
        result: ListTasksResponse.toJSON(await client.listTasks(
          {
            tenant: "",
            contextId: opts.context ?? "",
            status: 0,
            pageToken: "",
            statusTimestampAfter: undefined,
          },
          callOptions,
        )),
      };
    case "cancel": {
      let sent;
      let id = opts.task;
      if (!id) {
        sent = sendResult(await client.sendMessage(sendRequest(true), callOptions));
        if (!sent.task) return { sent, error: { name: "NoTask", message: "the agent answered with a message" } };
        id = sent.task.id;
      }
      const result = Task.toJSON(await client.cancelTask({ tenant: "", id, metadata: undefined }, callOptions));
      return sent ? { sent, result } : { result };
    }
  }
  return usage(`unknown command ${command}`);
}

let out;
try {
  out = await run();
} catch (err) {
  if (err?.name === "TypeError" || err?.name === "ReferenceError") {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  }
  out = errorJson(err);
}
process.stdout.write(`${JSON.stringify(out)}\n`);
