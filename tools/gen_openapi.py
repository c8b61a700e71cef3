#!/usr/bin/env python3
"""Writes supervisor/openapi.json, the OpenAPI 3.1 document of the REST face (rpc/rest.rs).

Run from the repository root: python3 tools/gen_openapi.py. The test rest_openapi checks the
document against the routes served and validates real answers against its schemas."""
import json
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def err_resp(desc): return {"description": desc, "content": {"application/json": {"schema": ref("Error")}}}
E = {
 "400": err_resp("Bad request: `invalid_request` (malformed body or query), `invalid_params`, `invalid_job_id`"),
 "401": err_resp("`unauthorized`: missing or wrong bearer token (with `WWW-Authenticate: Bearer`)"),
 "403": err_resp("`forbidden`: the caller's role does not allow this; `forbidden_origin`: a page of another site (the request's `Origin` is neither the server's own nor a configured CORS origin)"),
 "404": err_resp("`not_found`: no such job, or one of a context the caller has no role in (the two answer alike)"),
 "409": err_resp("`conflict`: the job is not in a state that allows this"),
 "413": err_resp("`payload_too_large`: the body is larger than the server's `max_request_body_bytes`"),
 "503": err_resp("`storage_unavailable` (the store is down) or `busy` (too many event streams)"),
}
def errs(*codes): return {c: E[c] for c in codes}
def ok(desc, schema, code="200"): return {code: {"description": desc, "content": {"application/json": {"schema": schema}}}}
job_id_param = {"name": "id", "in": "path", "required": True, "description": "The job id (a canonical UUID)", "schema": {"type": "string"}}
def q(name, desc, schema): return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}
nullable = lambda t: {"type": [t, "null"]}
time = {"type": "string", "format": "date-time"}
ntime = {"type": ["string", "null"], "format": "date-time"}
schemas = {
 "Error": {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
    "type": "object", "required": ["code", "message"], "properties": {
      "code": {"type": "string", "enum": ["invalid_request", "invalid_params", "invalid_job_id", "unauthorized", "forbidden", "forbidden_origin", "not_found", "method_not_allowed", "conflict", "job_failed", "payload_too_large", "storage_unavailable", "busy", "timeout", "websocket_required", "internal"]},
      "message": {"type": "string"},
      "job_id": {"type": "string", "description": "The job the error concerns, when there is one"}}}}},
 "JobStatus": {"type": "string", "enum": ["Created", "Dispatched", "WaitingForPrerequisites", "Started", "Error", "Finished"]},
 "ScriptType": {"type": "string", "enum": ["OSIS", "SAL", "V", "Python"]},
 "Runtime": {"type": "object", "required": ["identity", "version", "server_admin"], "properties": {
    "identity": {"type": "string", "description": "Who the caller acts as (`whoami`): a public key, an actor, or `anonymous`"},
    "version": {"type": "string"},
    "server_admin": {"type": "boolean", "description": "Whether the caller is a server admin; only then are the server's figures below present"},
    "uptime_secs": {"type": "integer", "minimum": 0},
    "jobs_by_status": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    "jobs_by_script_type": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    "queued": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    "lanes": {"type": "array", "description": "Ready jobs on each open lane (a context's own queue of a script type, served by its registered runners)", "items": {"type": "object", "required": ["context_id", "script_type", "queued"], "properties": {"context_id": {"type": "integer", "minimum": 0}, "script_type": {"type": "string"}, "queued": {"type": "integer", "minimum": 0}}}},
    "delayed": {"type": "integer", "minimum": 0},
    "runners": {"type": "array", "items": {"type": "object"}, "description": "The runner pools, as `list_runners` shows them"}}},
 "JobSubmit": {"type": "object", "required": ["script", "script_type"], "properties": {
    "script": {"type": "string", "description": "The script source (at most the server's max_script_bytes)"},
    "script_type": {"type": "string", "description": "`OSIS`, `SAL`, `V` or `Python`, any case"},
    "caller_id": {"type": "string"},
    "context_id": {"type": "string", "description": "Default `default`"},
    "timeout": {"type": "integer", "minimum": 0, "description": "Seconds per attempt (default 300)"},
    "prerequisites": {"type": "array", "items": {"type": "string"}, "description": "Job ids that must finish first"},
    "retries": {"type": "integer", "minimum": 0},
    "env_vars": {"type": "object", "additionalProperties": {"type": "string"}},
    "idempotency_key": {"type": "string", "description": "1 to 128 characters: the same key again (same caller) answers the first job (200) and creates nothing"},
    "start": {"type": "boolean", "default": True, "description": "false: only create (status `Created`); start it later with JSON-RPC `start_job`"}}},
 "Submitted": {"type": "object", "required": ["id", "status"], "additionalProperties": False, "properties": {
    "id": {"type": "string", "format": "uuid"}, "status": ref("JobStatus")}},
 "StopRequest": {"type": "object", "additionalProperties": False, "properties": {
    "reason": {"type": ["string", "null"], "maxLength": 1024, "description": "Why; written to the server log with the job id"}}},
 "Stopped": {"type": "object", "required": ["id", "status"], "additionalProperties": False, "properties": {
    "id": {"type": "string"}, "status": ref("JobStatus")}},
 "JobError": {"type": "object", "required": ["type", "message"], "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
 "Job": {"type": "object", "required": ["id", "params", "status", "attempt", "created_at", "updated_at"], "properties": {
    "id": {"type": "string", "format": "uuid"},
    "params": {"type": "object", "required": ["script", "script_type", "caller_id", "context_id", "timeout", "prerequisites", "retries", "env_vars"], "properties": {
        "script": {"type": "string"}, "script_type": ref("ScriptType"), "caller_id": {"type": "string"}, "context_id": {"type": "string"},
        "timeout": {"type": "integer", "minimum": 0}, "prerequisites": {"type": "array", "items": {"type": "string"}},
        "retries": {"type": "integer", "minimum": 0}, "env_vars": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "status": ref("JobStatus"), "attempt": {"type": "integer", "minimum": 0},
    "created_at": time, "updated_at": time, "started_at": ntime, "finished_at": ntime, "queued_at": ntime,
    "output": nullable("string"), "error": {"oneOf": [ref("JobError"), {"type": "null"}]},
    "runner": nullable("string"), "trace_id": nullable("string")}},
 "JobSummary": {"type": "object", "required": ["id", "status", "script_type", "context_id", "caller_id", "created_at", "updated_at", "attempt"], "properties": {
    "id": {"type": "string", "format": "uuid"}, "status": ref("JobStatus"), "script_type": ref("ScriptType"),
    "context_id": {"type": "string"}, "caller_id": {"type": "string"}, "created_at": time, "updated_at": time,
    "started_at": ntime, "finished_at": ntime, "attempt": {"type": "integer", "minimum": 0}}},
 "JobList": {"type": "object", "required": ["jobs", "next_cursor"], "additionalProperties": False, "properties": {
    "jobs": {"type": "array", "items": ref("JobSummary")},
    "next_cursor": {"type": ["string", "null"], "description": "Pass back as `cursor` for the next page; null when nothing is left"}}},
 "Transcript": {"type": "object", "required": ["job_id", "start", "next", "lines", "dropped"], "additionalProperties": False, "properties": {
    "job_id": {"type": "string"},
    "start": {"type": "integer", "minimum": 0, "description": "The sequence number of the first line answered"},
    "next": {"type": "integer", "minimum": 0, "description": "The `start` to ask for next"},
    "lines": {"type": "array", "items": {"type": "object", "required": ["seq", "line"], "additionalProperties": False, "properties": {
        "seq": {"type": "integer", "minimum": 0, "description": "The line's 0-based sequence number in the job's log, for its whole life"},
        "line": {"type": "string"}}}},
    "dropped": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["from", "to"], "properties": {
        "from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0}},
        "description": "The part [from, to) of the asked range that the log cap removed before it could be read"}]}}},
 "EventFrame": {"description": "One text frame of `GET /v1/jobs/{id}/events/ws`. Every frame has `cursor` (the sequence number of the next log line: pass it back as `?cursor=` to resume after this frame) and `event_id` (the same for the same event on every connection, so a client that resumes can drop what it saw).",
    "type": "object", "required": ["type", "job_id", "cursor", "event_id"], "properties": {
      "type": {"type": "string", "enum": ["snapshot", "log", "status", "cursor_expired", "end", "error"]},
      "job_id": {"type": "string"}, "cursor": {"type": "integer", "minimum": 0}, "event_id": {"type": "string"}},
    "oneOf": [
      {"properties": {"type": {"const": "snapshot"}, "job": ref("Job")}, "required": ["job"], "description": "First: the job as `GET /v1/jobs/{id}` shows it"},
      {"properties": {"type": {"const": "log"}, "index": {"type": "integer", "minimum": 0}, "line": {"type": "string"}}, "required": ["index", "line"]},
      {"properties": {"type": {"const": "status"}, "status": ref("JobStatus")}, "required": ["status"]},
      {"properties": {"type": {"const": "cursor_expired"}, "requested": {"type": "integer", "minimum": 0}, "resumed_at": {"type": "integer", "minimum": 0}}, "required": ["requested", "resumed_at"], "description": "The lines from `requested` to `resumed_at` were dropped by the log cap; the stream goes on at `resumed_at`"},
      {"properties": {"type": {"const": "end"}, "status": ref("JobStatus")}, "required": ["status"], "description": "The job ended; the server closes the connection"},
      {"properties": {"type": {"const": "error"}, "error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}, "required": ["error"], "description": "The stream can't go on (the job was deleted, the server shuts down); the server closes the connection"}]},
}
paths = {
 "/v1/runtime": {"get": {"operationId": "runtime", "summary": "Who the caller is, the version; for server admins the counts of jobs per status and the runners",
    "responses": {**ok("The runtime", ref("Runtime")), **errs("401", "503")}}},
 "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}, **errs("401")}}},
 "/v1/jobs": {
   "get": {"operationId": "listJobs", "summary": "Job summaries matching the filter, one page, ordered by (created_at, id) (JSON-RPC `list_jobs` with a filter)",
     "parameters": [q("status", "Only jobs of this status", ref("JobStatus")), q("script_type", "Only jobs of this script type (any case)", {"type": "string"}),
       q("context_id", "Only this context's jobs", {"type": "string"}), q("caller_id", "Only this caller's jobs", {"type": "string"}),
       q("created_after", "RFC 3339, exclusive", {"type": "string", "format": "date-time"}), q("created_before", "RFC 3339, exclusive", {"type": "string", "format": "date-time"}),
       q("limit", "Jobs per page, 1..=1000 (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}),
       q("cursor", "A previous page's `next_cursor`", {"type": "string"})],
     "responses": {**ok("One page; a page may be short while `next_cursor` is not null", ref("JobList")), **errs("400", "401", "503")}},
   "post": {"operationId": "submitJob", "summary": "Creates a job and starts it (as `run_job` without the wait); `\"start\": false` only creates",
     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobSubmit")}}},
     "responses": {"201": {"description": "Created (and started): its id and status; `Location` names it", "headers": {"Location": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": ref("Submitted")}}},
        **ok("An `idempotency_key` seen before: the first job, nothing created", ref("Submitted")), **errs("400", "401", "403", "404", "413", "503")}}},
 "/v1/jobs/{id}": {"get": {"operationId": "getJob", "summary": "Every stored field of the job (JSON-RPC `get_job`)", "parameters": [job_id_param],
    "responses": {**ok("The job", ref("Job")), **errs("400", "401", "404", "503")}}},
 "/v1/jobs/{id}/stop": {"post": {"operationId": "stopJob", "summary": "Stops the job (JSON-RPC `stop_job`): a waiting or queued one ends at once, a running one gets a cancel, then a hard kill; it ends in `Error` (`cancelled`). A job that ended already is left as it is",
    "parameters": [job_id_param], "requestBody": {"required": False, "content": {"application/json": {"schema": ref("StopRequest")}}},
    "responses": {**ok("The job's status after the request", ref("Stopped")), **errs("400", "401", "403", "404", "413", "503")}}},
 "/v1/jobs/{id}/cancel": {"post": {"operationId": "cancelJob", "summary": "The same as `stop` (one operation in the store); for tools that say cancel",
    "parameters": [job_id_param], "requestBody": {"required": False, "content": {"application/json": {"schema": ref("StopRequest")}}},
    "responses": {**ok("The job's status after the request", ref("Stopped")), **errs("400", "401", "403", "404", "413", "503")}}},
 "/v1/jobs/{id}/transcript": {"get": {"operationId": "transcript", "summary": "The job's log lines, paged by sequence number (JSON-RPC `get_job_logs` with `start` and `limit`)",
    "parameters": [job_id_param, q("start", "The sequence number of the first line wanted, inclusive (default 0)", {"type": "integer", "minimum": 0}),
       q("limit", "Lines at most (default 256); a larger limit than 10,000 is cut to 10,000", {"type": "integer", "minimum": 1})],
    "responses": {**ok("One page", ref("Transcript")), **errs("400", "401", "404", "503")}}},
 "/v1/jobs/{id}/events/ws": {"get": {"operationId": "jobEvents", "summary": "A plain WebSocket (not JSON-RPC) of the job's events: a `snapshot`, then the log lines from `cursor`, then live `log` and `status` events, then `end` and the close. Text frames, each an `EventFrame`",
    "parameters": [job_id_param, q("cursor", "The sequence number of the first log line wanted (default 0); an event's `cursor` resumes after it", {"type": "integer", "minimum": 0})],
    "x-websocket-frames": ref("EventFrame"),
    "responses": {"101": {"description": "Switching to the WebSocket; frames as `EventFrame`"}, **errs("400", "401", "404", "503")}}},
}
doc = {
 "openapi": "3.1.0",
 "info": {"title": "hero supervisor REST", "version": "0.1.0",
   "description": "The REST face of hero supervisor, on the JSON-RPC port and with its auth (`Authorization: Bearer <token>` when tokens are configured). Every route calls the JSON-RPC methods named in its summary, with the same access rules. Errors are `{\"error\": {\"code\", \"message\"}}`; an unknown `/v1` route is 404 `not_found`, a wrong method 405 `method_not_allowed` with `Allow`."},
 "paths": paths,
 "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required when the server has tokens configured"}}},
 "security": [{"bearer": []}, {}],
}
import pathlib
pathlib.Path("supervisor/openapi.json").write_text(json.dumps(doc, indent=2) + "\n")
