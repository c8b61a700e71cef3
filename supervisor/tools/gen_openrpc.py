#!/usr/bin/env python3
"""Writes the OpenRPC document of the hero supervisor to stdout.

Regenerate after changing the API:
    python3 supervisor/tools/gen_openrpc.py > supervisor/openrpc.json
The test `openrpc_document_lists_exactly_the_served_methods` (supervisor/tests/rpc_api.rs)
fails when the document and the served methods disagree.
"""
import json
import os
S = lambda name: {"$ref": f"#/components/schemas/{name}"}
E = lambda name: {"$ref": f"#/components/errors/{name}"}
string = {"type": "string"}
job_id = {"name": "job_id", "required": True, "description": "A job id: lowercase hyphenated UUID.", "schema": S("JobId")}
NF, IP, ST, INT, TO, JF, CF, UA, FB = (E(n) for n in ["JobNotFound","InvalidParams","StorageUnavailable","Internal","Timeout","JobFailed","Conflict","Unauthorized","Forbidden"])
def m(name, summary, params, result, errors):
    return {"name": name, "summary": summary, "paramStructure": "either", "params": params, "result": result, "errors": errors}
methods = [
 m("fetch_nonce", "A fresh single-use nonce for `pubkey`, to sign for `authenticate`.",
   [{"name":"pubkey","required":True,"description":"Hex of a SEC1 secp256k1 public key (compressed or uncompressed).","schema":string}],
   {"name":"nonce","description":"`hero-auth:` and 64 hex digits; expires after 5 minutes by default.","schema":string}, [IP, INT]),
 m("authenticate", "Checks an ECDSA secp256k1 signature (64-byte r||s, hex) over SHA-256 of the nonce's UTF-8 bytes; on success this WebSocket connection acts as `pubkey`.",
   [{"name":"pubkey","required":True,"schema":string},{"name":"signature","required":True,"schema":string},{"name":"nonce","required":True,"schema":string}],
   {"name":"authenticated","schema":{"type":"boolean"}}, [IP, UA, INT]),
 m("whoami", "The caller's identity: the authenticated public key (hex, compressed SEC1), or `anonymous`.", [],
   {"name":"identity","schema":string}, [INT]),
 m("play", "Runs `script` as SAL and waits for its output.",
   [{"name":"script","required":True,"schema":string},
    {"name":"context_id","required":False,"description":"Extension: the context to run it in (default: the default context); the caller must be one of its executors.","schema":string}], {"name":"result","schema":S("PlayResult")}, [IP, TO, JF, ST, FB, INT]),
 m("create_job", "Stores a job as `Created` (not queued); returns its id.",
   [{"name":"params","required":True,"schema":S("JobParams")}], {"name":"job_id","schema":S("JobId")}, [IP, ST, FB, INT]),
 m("create_jobs", "Extension: creates many jobs (1 to 1,000, all of one context namespace: one numbered context, or only unnumbered context ids) and, unless `start` is false, starts them; all or nothing, in one store call. Returns their ids in order. `idempotency_key` is refused here.",
   [{"name":"jobs","required":True,"schema":{"type":"array","minItems":1,"maxItems":1000,"items":S("JobParams")}},
    {"name":"start","required":False,"description":"Queue each job as `start_job` would (default true).","schema":{"type":"boolean"}}],
   {"name":"job_ids","schema":{"type":"array","items":S("JobId")}}, [IP, ST, FB, INT]),
 m("start_job", "Queues a `Created` job, or parks it as `WaitingForPrerequisites`.",
   [job_id], {"name":"result","schema":S("StartJobResult")}, [IP, NF, CF, ST, FB, INT]),
 m("run_job", "Creates, starts and waits for a job; returns its output.",
   [{"name":"script","required":True,"schema":string},{"name":"script_type","required":True,"schema":S("ScriptType")},
    {"name":"prerequisites","required":False,"schema":{"type":"array","items":S("JobId")}},
    {"name":"timeout","required":False,"description":"Extension: seconds; bounds the job and the wait (default 300).","schema":{"type":"integer","minimum":1}},
    {"name":"context_id","required":False,"description":"Extension: the context to run it in (default: the default context); the caller must be one of its executors.","schema":string}],
   {"name":"output","schema":string}, [IP, TO, JF, ST, FB, INT]),
 m("get_job_status", "The job's status.", [job_id], {"name":"status","schema":S("JobStatus")}, [IP, NF, ST, FB, INT]),
 m("get_job_output", "The job's output; empty until it finished.", [job_id], {"name":"output","schema":string}, [IP, NF, ST, FB, INT]),
 m("get_job_logs", "The job's log lines joined with a newline, or null. Extension: with `start` or `limit`, one page `{logs, lines, start, next, dropped}`: `lines[i]` has sequence number `start + i` (a line's 0-based number in the job's log, its own for good, also once the log cap dropped older lines); ask for `next` to go on; `dropped` names the part of the asked range the cap removed.",
   [job_id,
    {"name":"start","required":False,"description":"Extension: the sequence number of the first line wanted (default 0).","schema":{"type":"integer","minimum":0}},
    {"name":"limit","required":False,"description":"Extension: lines per page (default 256; larger is cut to 10,000; 0 is refused).","schema":{"type":"integer","minimum":1}}],
   {"name":"result","schema":S("JobLogsResult")}, [IP, NF, ST, FB, INT]),
 m("list_jobs", "Without `filter`: every job id the caller may see, oldest first. Extension: with `filter`, one page `{jobs, next_cursor}` of the visible jobs matching it, ordered by (created_at, id); pass `next_cursor` back as the filter's `cursor` until it is null. A page may hold fewer than `limit` jobs while `next_cursor` is not null (each call looks at a bounded number of jobs).",
   [{"name":"filter","required":False,"schema":S("ListJobsFilter")}],
   {"name":"result","schema":{"oneOf":[{"type":"array","items":S("JobId")},S("JobList")]}}, [IP, ST, FB, INT]),
 m("stop_job", "Cancels a queued or running job; it ends in `Error` with type `cancelled`.", [job_id], {"name":"result","schema":{"type":"null"}}, [IP, NF, CF, ST, FB, INT]),
 m("delete_job", "Deletes the job and everything about it.", [job_id], {"name":"result","schema":{"type":"null"}}, [IP, NF, ST, FB, INT]),
 m("clear_all_jobs", "Deletes every job.", [], {"name":"result","schema":{"type":"null"}}, [ST, FB, INT]),
 m("get_job", "Extension: every stored field of the job.", [job_id], {"name":"job","schema":S("Job")}, [IP, NF, ST, FB, INT]),
 m("list_runners", "Extension: the runner pools and their state.", [], {"name":"runners","schema":{"type":"array","items":S("RunnerInfo")}}, [INT]),
 m("stats", "Extension (server admins): job counts per status and per script type, ready jobs per queue, delayed jobs, the runner pools (as list_runners), uptime and version.", [], {"name":"stats","schema":S("Stats")}, [ST, FB, INT]),
 m("rpc.discover", "This OpenRPC document.", [], {"name":"document","schema":{"type":"object"}}, []),
 m("subscribe_job_events", "WebSocket only. Subscribes to the job's events (notification `job_event`): its current status, its log lines from `cursor`, then every change; the last notification is a terminal status. Returns the subscription id.",
   [job_id, {"name":"cursor","required":False,"description":"Index of the next log line wanted (default 0).","schema":{"type":"integer","minimum":0}}],
   {"name":"subscription","description":"Notifications carry a JobEvent.","schema":string}, [IP, NF, ST, FB, INT]),
 m("unsubscribe_job_events", "Ends a subscription made with `subscribe_job_events`.",
   [{"name":"subscription","required":True,"schema":string}], {"name":"unsubscribed","schema":{"type":"boolean"}}, []),
]
def err(code, data_code, message, extra=None):
    d = {"type":"object","properties":{"code":{"const":data_code}},"required":["code"]}
    if extra:
        d["properties"].update(extra)
    return {"code": code, "message": message, "data": d}
jid = {"job_id": S("JobId")}
errors = {
 "InvalidParams": err(-32602, "invalid_params", "Invalid params: bad script type, empty or oversize script, bad limits; `data.code` is `invalid_job_id` for a malformed job id."),
 "JobNotFound": err(-32001, "job_not_found", "Job not found.", jid),
 "Timeout": err(-32002, "timeout", "The job did not finish within its timeout; it keeps running and its own state.", {**jid, "waited_secs":{"type":"integer"}}),
 "JobFailed": err(-32003, "job_failed", "The job ended in Error.", {**jid, "error_type":string, "message":string}),
 "Conflict": err(-32004, "conflict", "The job is not in a state that allows this operation."),
 "Unauthorized": err(-32005, "unauthorized", "Signature authentication failed: unknown, used or expired nonce, or a signature that does not verify."),
 "Forbidden": err(-32006, "forbidden", "The caller may see this but its role does not allow the operation (a reader stopping a job), or the operation is a server admin's. An outsider of a context gets -32001 instead, as if the job or context did not exist."),
 "NotFound": err(-32001, "not_found", "Actor or context not found, or one the caller may not see (the two answer alike)."),
 "StorageError": err(-32010, "storage_unavailable", "The store (Redis) is unreachable or failing."),
 "StorageUnavailable": err(-32010, "storage_unavailable", "The store (Redis) is unreachable or failing."),
 "Internal": err(-32603, "internal", "Internal error."),
 "DagMissingDependency": err(-32020, "dag_missing_dependency", "A job of the flow depends on a job outside it; `data.missing` lists every `{job, depends_on}` pair.",
   {"missing":{"type":"array","items":{"type":"object","required":["job","depends_on"],"properties":{"job":{"type":"integer"},"depends_on":{"type":"integer"}}}}}),
 "DagCycleDetected": err(-32021, "dag_cycle", "The flow's dependencies form a cycle; `data.cycle` is its path: each job depends on the next, the last is the first again.",
   {"cycle":{"type":"array","items":{"type":"integer"}}}),
}
errors["InvalidParams"]["data"]["properties"]["code"] = {"enum":["invalid_params","invalid_job_id"]}
status_enum = ["Created","Dispatched","WaitingForPrerequisites","Started","Error","Finished"]
ts = {"type":"string","format":"date-time"}
schemas = {
 "JobId": {"type":"string","pattern":"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
 "ScriptType": {"type":"string","description":"Input is case-insensitive; output is the canonical spelling.","enum":["OSIS","SAL","V","Python"]},
 "JobStatus": {"type":"string","enum":status_enum},
 "JobParams": {"type":"object","required":["script","script_type"],"properties":{
   "script":{"type":"string","maxLength":1048576},"script_type":S("ScriptType"),
   "caller_id":{"type":"string","description":"Replaced by the public key on an authenticated connection; default `anonymous`."},
   "context_id":{"type":"string","description":"Default `default`."},
   "timeout":{"type":"integer","minimum":1,"description":"Seconds per attempt; default 300."},
   "prerequisites":{"type":"array","items":S("JobId")},
   "retries":{"type":"integer","minimum":0,"description":"Default 2."},
   "env_vars":{"type":"object","additionalProperties":{"type":"string"}},
   "idempotency_key":{"type":"string","minLength":1,"maxLength":128,"description":"Creating again with the same key (same caller) answers the first job's id and creates nothing, for the retention of signed calls (7 days)."}}},
 "StartJobResult": {"type":"object","required":["success"],"properties":{"success":{"type":"boolean"}}},
 "JobLogsResult": {"type":"object","required":["logs"],"properties":{"logs":{"type":["string","null"]},
   "lines":{"type":"array","items":{"type":"string"}},"start":{"type":"integer","minimum":0},"next":{"type":"integer","minimum":0},
   "dropped":{"oneOf":[{"type":"null"},{"type":"object","required":["from","to"],"properties":{"from":{"type":"integer","minimum":0},"to":{"type":"integer","minimum":0}}}]}}},
 "PlayResult": {"type":"object","required":["output"],"properties":{"output":{"type":"string"}}},
 "JobError": {"type":"object","required":["type","message"],"properties":{"type":{"type":"string"},"message":{"type":"string"}}},
 "Job": {"type":"object","required":["id","params","status","attempt","created_at","updated_at"],"properties":{
   "id":S("JobId"),
   "params":{"type":"object","required":["script","script_type","caller_id","context_id","timeout","prerequisites","retries","env_vars"],"properties":{
     "script":{"type":"string"},"script_type":S("ScriptType"),"caller_id":{"type":"string"},"context_id":{"type":"string"},
     "timeout":{"type":"integer"},"prerequisites":{"type":"array","items":S("JobId")},"retries":{"type":"integer"},
     "env_vars":{"type":"object","additionalProperties":{"type":"string"}}}},
   "status":S("JobStatus"),"attempt":{"type":"integer"},"created_at":ts,"updated_at":ts,
   "started_at":{"type":["string","null"],"format":"date-time"},"finished_at":{"type":["string","null"],"format":"date-time"},
   "output":{"type":["string","null"]},"error":{"oneOf":[S("JobError"),{"type":"null"}]},"runner":{"type":["string","null"]},
   "queued_at":{"type":["string","null"],"format":"date-time","description":"When it last entered its ready queue: the enqueue_time its runner sees."},
   "trace_id":{"type":["string","null"],"description":"W3C trace id: from the traceparent header of the request that created it, or new."}}},
 "RunnerInfo": {"type":"object","required":["name","script_types","transport","connected","processes","in_flight","max_in_flight","restarts","hello","protocol","failures","last_error"],"properties":{
   "name":{"type":"string"},"script_types":{"type":"array","items":S("ScriptType")},"transport":{"type":"string","description":"stdio, tcp or tcp-managed"},
   "connected":{"type":"integer","description":"Runner slots with a live connection."},"processes":{"type":"integer"},"in_flight":{"type":"integer"},"max_in_flight":{"type":"integer"},"restarts":{"type":"integer"},
   "hello":{"type":"string","enum":["auto","on","off"],"description":"The pool's hello setting."},
   "protocol":{"type":["string","null"],"enum":["v1","v1+hello",None],"description":"What the latest connection speaks; null before the first."},
   "failures":{"type":"integer","minimum":0,"description":"Failed starts in a row; 0 once a connection lived 10 s."},
   "last_error":{"type":["string","null"],"description":"Why the latest start failed or connection ended; cleared once a connection lived 10 s."}}},
 "ListJobsFilter": {"type":"object","additionalProperties":False,"properties":{
   "status":S("JobStatus"),"script_type":S("ScriptType"),"context_id":{"type":"string"},"caller_id":{"type":"string"},
   "created_after":{"type":"string","format":"date-time","description":"Exclusive."},
   "created_before":{"type":"string","format":"date-time","description":"Exclusive."},
   "limit":{"type":"integer","minimum":1,"maximum":1000,"description":"Default 100."},
   "cursor":{"type":"string","description":"A previous page's next_cursor (opaque)."}}},
 "JobSummary": {"type":"object","required":["id","status","script_type","context_id","caller_id","created_at","updated_at","started_at","finished_at","attempt"],"properties":{
   "id":S("JobId"),"status":S("JobStatus"),"script_type":S("ScriptType"),"context_id":{"type":"string"},"caller_id":{"type":"string"},
   "created_at":ts,"updated_at":ts,"started_at":{"type":["string","null"],"format":"date-time"},"finished_at":{"type":["string","null"],"format":"date-time"},
   "attempt":{"type":"integer","minimum":0}}},
 "JobList": {"type":"object","required":["jobs","next_cursor"],"properties":{
   "jobs":{"type":"array","items":S("JobSummary")},"next_cursor":{"type":["string","null"]}}},
 "Stats": {"type":"object","required":["version","uptime_secs","jobs_by_status","jobs_by_script_type","queued","delayed","runners"],"properties":{
   "version":{"type":"string"},"uptime_secs":{"type":"integer","minimum":0},
   "jobs_by_status":{"type":"object","additionalProperties":{"type":"integer"},"description":"Every status, zeros included."},
   "jobs_by_script_type":{"type":"object","additionalProperties":{"type":"integer"},"description":"Jobs stored per script type."},
   "queued":{"type":"object","additionalProperties":{"type":"integer"},"description":"Ready jobs per script type's queue."},
   "lanes":{"type":"array","description":"Ready jobs on each open lane: a context's own queue of a script type, served only by the runners registered in that context.","items":{"type":"object","required":["context_id","script_type","queued"],"properties":{"context_id":{"type":"integer","minimum":0},"script_type":{"type":"string"},"queued":{"type":"integer","minimum":0}}}},
   "delayed":{"type":"integer","minimum":0,"description":"Jobs waiting for a retry time."},
   "runners":{"type":"array","items":S("RunnerInfo")}}},
 "JobEvent": {"oneOf":[
   {"type":"object","required":["type","job_id","status","cursor"],"properties":{"type":{"const":"status"},"job_id":S("JobId"),"status":S("JobStatus"),"cursor":{"type":"integer","minimum":0,"description":"The sequence number of the next log line not sent yet: pass it as `cursor` to resume after this event."}}},
   {"type":"object","required":["type","job_id","index","line"],"properties":{"type":{"const":"log"},"job_id":S("JobId"),"index":{"type":"integer","minimum":0,"description":"The line's sequence number, for good (also once the cap drops older lines)."},"line":{"type":"string"}}},
   {"type":"object","required":["type","job_id","requested","resumed_at"],"description":"Lines from `requested` to `resumed_at` (exclusive) were dropped by the log cap; the stream goes on at `resumed_at`.","properties":{"type":{"const":"cursor_expired"},"job_id":S("JobId"),"requested":{"type":"integer","minimum":0},"resumed_at":{"type":"integer","minimum":0}}}]},
}
# Signed asynchronous calls (COORDINATION.md section 2).
call_status = {"type":"string","enum":["pending","running","done","error"]}
schemas.update({
 "RpcInParams": {"type":"object","additionalProperties":False,"required":["rpc_id","method_name","params","pubkey","signature"],"properties":{
   "rpc_id":{"type":"string","minLength":1,"maxLength":128,"description":"Chosen by the caller, unique per caller key: the same id again answers the first call's state and runs nothing."},
   "method_name":{"type":"string","description":"Any served method but the call methods and subscriptions."},
   "params":{"type":"string","description":"The method's params as JSON text (by position or by name), so the signed bytes are exact; at most 1 MiB."},
   "pubkey":{"type":"string","description":"The caller's secp256k1 public key, hex SEC1. The call acts as this key's actor."},
   "signature":{"type":"string","description":"ECDSA secp256k1 over SHA-256 of the UTF-8 bytes of rpc_id + method_name + params + return_url + return_topic (absent: empty), 64-byte r||s in hex."},
   "async":{"type":"boolean","description":"false (default): answer the method's result; true: answer {rpc_id, status} at once."},
   "return_url":{"type":"string","description":"Where the signed rpc_return is POSTed; its host must be in the server's allow-list (default loopback)."},
   "return_topic":{"type":"string","maxLength":256},
   "encryption":{"type":"string","description":"Encryption scheme of params and result; server_info lists the ones served."}}},
 "RpcRefParams": {"type":"object","additionalProperties":False,"required":["rpc_id","pubkey","signature"],"properties":{
   "rpc_id":{"type":"string"},"pubkey":{"type":"string"},"signature":{"type":"string","description":"The caller's signature of rpc_id."}}},
 "RpcAccepted": {"type":"object","required":["rpc_id","status"],"properties":{"rpc_id":{"type":"string"},"status":call_status}},
 "DeliveryAttempt": {"type":"object","required":["at"],"properties":{"at":ts,"http_status":{"type":["integer","null"]},"error":{"type":["string","null"]}}},
 "CallState": {"type":"object","required":["rpc_id","method_name","status","delivery","attempts","attempt_count","created_at","updated_at"],"properties":{
   "rpc_id":{"type":"string"},"method_name":{"type":"string"},"status":call_status,
   "result":{"description":"Once ended: the method's result, or {error: {code, message, data}}."},
   "job_id":{"type":["string","null"]},
   "delivery":{"type":"string","enum":["none","pending","delivered","undeliverable"]},
   "attempts":{"type":"array","items":S("DeliveryAttempt"),"description":"The newest delivery attempts (at most 20)."},
   "attempt_count":{"type":"integer","minimum":0},"created_at":ts,"updated_at":ts}},
 "ServerInfo": {"type":"object","required":["pubkey","version","encryption"],"properties":{
   "pubkey":{"type":"string","description":"The key that signs every rpc_return (hex, compressed SEC1)."},
   "version":{"type":"string"},"encryption":{"type":"array","items":{"type":"string"}}}},
})
errors["CallNotFound"] = err(-32001, "call_not_found", "No call with this rpc_id by this key (or it is older than the retention).")
errors["Interrupted"] = err(-32603, "interrupted", "The instance running the call stopped before the method answered; it may or may not have taken effect.")
methods += [
 m("rpc_in", "Runs `method_name` with `params` as the actor of `pubkey` once per (pubkey, rpc_id); the result is POSTed, signed by the server's key, to `return_url` as {rpc_id, method_name, params, pubkey, signature, topic, status, result} with result as JSON text and the signature over rpc_id + method_name + params + result. Retried with backoff for the delivery window (default 24 h), at least once.",
   [{"name":"params","required":True,"schema":S("RpcInParams")}],
   {"name":"result","description":"async false: the method's result (or its error); async true, or a replay of an unfinished call: RpcAccepted.","schema":{}},
   [IP, UA, CF, ST, FB, NF, TO, JF, INT]),
 m("rpc_check", "The state of the caller's call (signature of rpc_id), with its result once ended and its delivery attempts.",
   [{"name":"params","required":True,"schema":S("RpcRefParams")}], {"name":"state","schema":S("CallState")}, [IP, UA, E("CallNotFound"), ST, INT]),
 m("rpc_kill", "Stops the caller's running call (signature of rpc_id): the job it runs is stopped, or the method is aborted; answers the state.",
   [{"name":"params","required":True,"schema":S("RpcRefParams")}], {"name":"state","schema":S("CallState")}, [IP, UA, E("CallNotFound"), ST, INT]),
 m("server_info", "The server's public key (what signs every rpc_return), its version and the encryption schemes rpc_in accepts.",
   [], {"name":"info","schema":S("ServerInfo")}, [INT]),
]
# The coordinator methods served here, copied from the contract
# (../shared/specs/coordinator.openrpc.json) with their schemas, so a client generated
# from either document calls them the same way. Forbidden is added to their errors.
SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/specs/coordinator.openrpc.json")
with open(SPEC) as f:
    spec = json.load(f)
SPEC_METHODS = ["actor.create", "actor.load", "context.create", "context.load",
                "runner.create", "runner.load",
                "job.create", "job.load", "flow.create", "flow.load", "flow.dag",
                "message.create", "message.load"]
def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref", "")
        if r.startswith("#/components/schemas/"):
            name = r.rsplit("/", 1)[1]
            if name not in found:
                found.add(name)
                refs(spec["components"]["schemas"][name], found)
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)
needed = set()
for method in spec["methods"]:
    if method["name"] in SPEC_METHODS:
        method = json.loads(json.dumps(method))
        method["errors"] = method["errors"] + [FB]
        methods.append(method)
        refs(method, needed)
# Extensions of the spec's methods, documented where they are served.
EXT_NOTES = {
 "job.create": " Extension: the answer's `job_id` is the supervisor job behind it. Replacing a job that has started is -32004 `conflict`; a caller that is an actor is recorded as `caller_id`.",
 "job.load": " Extension: `job_id`, the supervisor job behind it (`get_job`). `status` maps the supervisor's `Created` to `Dispatched`; `result` is `{output}` once Finished, `{error_type, error}` once Error, else empty. `caller_id` in the params is ignored.",
 "flow.create": " The jobs must exist in the context (else -32602, `data.unknown_jobs`); their `depends` must form a DAG inside the flow (-32020, -32021). Replacing a started flow is -32004 `conflict`.",
 "flow.load": " `status`: Error as soon as a job failed, Finished when all finished, Started once one started, else Dispatched. `result`: `\"<job id>\"`: its output; `\"<job id>.error\"`: `type: message`.",
 "runner.create": " Extensions: `port`, `script_types`, `hello`, `auth_token` (see RunnerCreate). With a port, every instance connects to `tcp://<address>:<port>` and routes jobs of its script types there, from every context (routing is by script type across the server), so only server admins may register one (-32006 for a context admin); context admins register runners without a port (records only). Replacing one with another connection drains the old pool without losing jobs.",
 "message.create": " For executors. Its `job` entries become coordinator jobs of the context (as job.create makes them; a job timeout of 0 takes the message's `timeout`) and start at once, each waiting for its `depends`, which must stay inside the message (-32020, -32021). Job ids must be distinct and new or unstarted (-32004 otherwise); a message id is dispatched once (-32004 on a second create). `timeout_ack` / `timeout_result` (seconds from creation, 0: none) are enforced by the server: a message not acknowledged (no runner took a job) or not processed by then ends Error, its jobs stopped.",
 "message.load": " For readers; `caller_id` in the params is ignored. `status`: Error once a job failed or a deadline passed, Processed when every job finished, Acknowledged once a runner took a job, else Dispatched. `transport_status`: Failed, Read, Delivered, Sent (a job waits in a runner queue) or Queued (none does yet). `logs`: the lines given at creation, then each job's log lines as `[job <id>] <line>`, then `[message] <why>` when the server ended it.",
 "runner.load": " For the context's admins. Extensions: `context_id`, `port`, `endpoint`, `script_types`, `hello`, `pool` (the prefix of its pool's name in `list_runners`). The auth token is never returned.",
}
for method in methods:
    if method["name"] in EXT_NOTES:
        method["summary"] += "." + EXT_NOTES[method["name"]]
    if method["name"] in ("job.create", "flow.create", "message.create"):
        method["errors"] = method["errors"] + [CF]
    if method["name"] in ("flow.create", "message.create"):
        method["errors"] = method["errors"] + [E("DagMissingDependency"), E("DagCycleDetected")]
methods.append(m("flow.start", "Extension: starts every job of the flow, each waiting (as `WaitingForPrerequisites`) until its `depends` finished; a failed job fails its dependents with `prerequisite_failed`. Starting a started flow starts nothing more. Returns the flow.",
   [{"name":"params","required":True,"schema":S("FlowLoadParams")}], {"name":"result","schema":S("Flow")}, [IP, NF, CF, ST, FB, E("DagMissingDependency"), E("DagCycleDetected"), INT]))
# A spec schema whose name is taken by one of ours (`Job`, `JobStatus`, `ScriptType`:
# the coordinator spells them its own way) is copied as `Coordinator<Name>`.
renamed = {n: "Coordinator" + n for n in needed if n in schemas}
def rename(node):
    if isinstance(node, dict):
        return {k: (("#/components/schemas/" + renamed.get(v.rsplit("/", 1)[1], v.rsplit("/", 1)[1]))
                    if k == "$ref" and v.startswith("#/components/schemas/") else rename(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [rename(v) for v in node]
    return node
methods[:] = [rename(mm) if mm["name"] in SPEC_METHODS + ["flow.start"] else mm for mm in methods]
for name in sorted(needed):
    new_name = renamed.get(name, name)
    assert new_name not in schemas, new_name
    schemas[new_name] = rename(spec["components"]["schemas"][name])
# Extensions of the runner shapes: what a connection needs (COORDINATION.md §1).
coord_types = {"type":"array","items":S("CoordinatorScriptType"),"description":"Extension: the script types routed to it (any case on input)."}
schemas["RunnerCreate"]["properties"].update({
  "port":{"type":"integer","minimum":1,"maximum":65535,"description":"Extension: the TCP port it listens on; the supervisor connects to tcp://<address>:<port>. Without it the runner is a record only."},
  "script_types":coord_types,
  "hello":{"type":"string","enum":["auto","on","off"],"description":"Extension: whether connections open with hello (default auto)."},
  "auth_token":{"type":"string","description":"Extension: the token the runner requires in hello. Kept, never returned."}})
schemas["Runner"]["properties"].update({
  "context_id":{"type":"integer","format":"uint32","description":"Extension: the context it is registered in."},
  "port":{"type":"integer","minimum":1,"maximum":65535,"description":"Extension: its TCP port, when the supervisor connects to it."},
  "endpoint":{"type":"string","description":"Extension: tcp://<address>:<port>, when it has a port."},
  "script_types":coord_types,
  "hello":{"type":"string","enum":["auto","on","off"],"description":"Extension."},
  "pool":{"type":"string","description":"Extension: its pool's name in list_runners starts with this (ctx<context>.runner<id>)."}})
schemas["CoordinatorJob"] = json.loads(json.dumps(schemas["CoordinatorJob"]))
schemas["CoordinatorJob"]["properties"]["job_id"] = {"description": "Extension: the supervisor job behind it.", **S("JobId")}
doc = {"openrpc":"1.3.2","info":{"title":"hero supervisor","version":"0.1.0",
  "description":"JSON-RPC 2.0 over HTTP and WebSocket on one port. With a token configured, every request and WebSocket upgrade needs `Authorization: Bearer <token>`."},
  "methods": methods, "components":{"schemas":schemas,"errors":errors}}
print(json.dumps(doc, indent=2))
