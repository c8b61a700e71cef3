//! The dashboard (`/ui/`, `supervisor/ui/`) in a real headless Chromium against a real
//! server with real runner processes (`hero-test-runner`): the overview sees a job
//! created through the API appear and finish without a reload; a job's page shows its
//! log lines as they are written and stops it with its button, and retries it as a new
//! job; a flow's DAG is drawn by levels in its jobs' colours; the runners page; and, on
//! a server with a token, the token prompt, a refused token, then the live logs over
//! the WebSocket with the token as a subprotocol. Each page's screenshot goes to
//! `target/ui-screenshots/` (the README's come from there).
//!
//! One browser for the whole file, pages in sequence: a browser is the heavy part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;

use std::net::SocketAddr;
use std::time::Duration;

use browser::Browser;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::SupervisorConfig;
use serde_json::{Value, json};

const TEST_RUNNER: &str = env!("CARGO_BIN_EXE_hero-test-runner");
const TOKEN: &str = "ui-test-token";
/// How long a condition the page should reach may take on a slow, loaded machine.
const WAIT: u64 = 40;

async fn start(token: Option<&str>) -> RunningServer {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        rpc: RpcConfig {
            auth_token: token.map(str::to_owned),
            ..RpcConfig::default()
        },
        supervisor: SupervisorConfig::with_runner_command(TEST_RUNNER, Vec::new()),
        ..ServeConfig::default()
    };
    server::start(config).await.expect("start the server")
}

/// An API client of the server at `addr` (REST and JSON-RPC), with `token` if any.
struct Api {
    http: reqwest::Client,
    addr: SocketAddr,
    token: Option<&'static str>,
}

impl Api {
    fn new(addr: SocketAddr, token: Option<&'static str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            addr,
            token,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let req = match self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.expect("an answer");
        let status = resp.status();
        let value: Value = resp.json().await.expect("JSON");
        assert!(status.is_success(), "{status}: {value}");
        value
    }

    async fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("http://{}{path}", self.addr)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(
            self.http
                .post(format!("http://{}{path}", self.addr))
                .json(&body),
        )
        .await
    }

    /// A job of the test runner, created and started through REST: its id.
    async fn submit(&self, script: &str) -> String {
        let answer = self
            .post(
                "/v1/jobs",
                json!({"script": script, "script_type": "SAL", "retries": 0}),
            )
            .await;
        answer["id"].as_str().expect("an id").to_owned()
    }

    async fn rpc(&self, method: &str, params: Value) -> Value {
        let answer = self
            .post(
                "/",
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": [params]}),
            )
            .await;
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Waits until job `id` has `status` (REST), `WAIT` seconds at most.
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
        loop {
            let job = self.get(&format!("/v1/jobs/{id}")).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never reached {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_system_live() {
    let server = start(None).await;
    let addr = server.addr();
    let api = Api::new(addr, None);
    let browser = Browser::start().await;
    let ui = format!("http://{addr}/ui/");

    // The shell is served with its security headers; `/ui` redirects to it.
    let resp = reqwest::get(format!("http://{addr}/ui")).await.unwrap();
    assert_eq!(resp.url().path(), "/ui/");
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");

    overview_sees_a_job_appear_and_finish(&browser, &api, &ui).await;
    jobs_page_lists_it(&browser, &api, &ui).await;
    job_page_follows_logs_stops_and_retries(&browser, &api, &ui).await;
    flow_page_draws_levels_in_colours(&browser, &api, &ui).await;
    runners_page_shows_the_pool(&browser, &ui).await;

    // Auth on: a second server with a token, the same browser (another origin, so an
    // empty session storage).
    let guarded = start(Some(TOKEN)).await;
    token_prompt_then_live_logs(&browser, &Api::new(guarded.addr(), Some(TOKEN))).await;

    browser.quit().await;
    guarded.stop().await;
    server.stop().await;
}

async fn overview_sees_a_job_appear_and_finish(browser: &Browser, api: &Api, ui: &str) {
    browser.goto(ui).await;
    let before = browser
        .wait_for(
            "the overview's Finished count",
            WAIT,
            "const c = document.querySelector('[data-count-status=\"Finished\"]'); return c ? c.textContent : null",
            json!([]),
        )
        .await;
    assert_eq!(before, "0");
    browser
        .wait_for(
            "the built-in pool shown up",
            WAIT,
            "return document.querySelector('#runners tr[data-state=\"up\"]') !== null",
            json!([]),
        )
        .await;
    // A mark that a reload would wipe.
    browser
        .exec("window.__noReload = 'still here'; return true", json!([]))
        .await;

    let id = api.submit("sleep 8").await;
    // It appears before it finished (it sleeps 8 s; the list is read every 2 s), then
    // finishes, on the same page.
    let first_seen = browser
        .wait_for(
            "the new job in the newest jobs",
            WAIT,
            "const r = document.querySelector(`#recent tr[data-job=\"${arguments[0]}\"]`); return r ? r.dataset.status : null",
            json!([id]),
        )
        .await;
    assert_ne!(first_seen, "Finished", "the job was first shown finished");
    browser
        .wait_for(
            "the new job shown Finished",
            WAIT,
            "const r = document.querySelector(`#recent tr[data-job=\"${arguments[0]}\"]`); return r && r.dataset.status === 'Finished'",
            json!([id]),
        )
        .await;
    api.wait_status(&id, "Finished").await;
    browser
        .wait_for(
            "the Finished count at 1",
            WAIT,
            "return document.querySelector('[data-count-status=\"Finished\"]').textContent === '1'",
            json!([]),
        )
        .await;

    // Some traffic for the throughput chart, then its line.
    for i in 0..24 {
        let script = if i % 6 == 5 {
            "fail on purpose".to_owned()
        } else {
            format!("echo {i}")
        };
        api.submit(&script).await;
    }
    api.submit("sleep 20").await;
    browser
        .wait_for(
            "the Finished count at 21",
            WAIT,
            "return document.querySelector('[data-count-status=\"Finished\"]').textContent === '21'",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "a throughput line above zero",
            WAIT,
            "const l = document.querySelector('#throughput polyline'); return l !== null && Number(document.querySelector('#throughput').dataset.points) >= 2",
            json!([]),
        )
        .await;
    let kept = browser.exec("return window.__noReload", json!([])).await;
    assert_eq!(kept, "still here", "the overview reloaded");
    browser.screenshot("overview").await;
}

async fn jobs_page_lists_it(browser: &Browser, api: &Api, ui: &str) {
    browser.goto(&format!("{ui}#/jobs?status=Error")).await;
    browser
        .wait_for(
            "the four failed jobs, filtered",
            WAIT,
            "const rows = [...document.querySelectorAll('#jobs-page tr[data-job]')]; return rows.length === 4 && rows.every(r => r.dataset.status === 'Error')",
            json!([]),
        )
        .await;
    browser.goto(&format!("{ui}#/jobs")).await;
    let listed = api.get("/v1/jobs?limit=50").await;
    let first = listed["jobs"][0]["id"].as_str().unwrap().to_owned();
    browser
        .wait_for(
            "every job, oldest first",
            WAIT,
            "const rows = document.querySelectorAll('#jobs-page tr[data-job]'); return rows.length >= 26 && rows[0].dataset.job === arguments[0]",
            json!([first]),
        )
        .await;
    browser.screenshot("jobs").await;
    // The shortcut to the last 10 minutes: a created_after filter, the same jobs.
    browser
        .exec(
            "document.querySelector('#jobs-page').dataset.old = 'yes'; return true",
            json!([]),
        )
        .await;
    browser.click("#last-10-min").await;
    browser
        .wait_for(
            "the jobs of the last 10 minutes",
            WAIT,
            "const t = document.querySelector('#jobs-page'); return location.hash.includes('created_after=') && t && !t.dataset.old && t.querySelectorAll('tr[data-job]').length >= 26",
            json!([]),
        )
        .await;
}

async fn job_page_follows_logs_stops_and_retries(browser: &Browser, api: &Api, ui: &str) {
    let id = api.submit("ticks 200 200").await;
    api.wait_status(&id, "Started").await;
    browser.goto(&format!("{ui}#/jobs/{id}")).await;
    let first = browser
        .wait_for(
            "three log lines",
            WAIT,
            "const n = document.querySelectorAll('#logs .line').length; return n >= 3 ? n : 0",
            json!([]),
        )
        .await
        .as_u64()
        .unwrap();
    // More arrive while the page stays open: they are followed, not loaded once.
    browser
        .wait_for(
            "more log lines, live",
            WAIT,
            "return document.querySelectorAll('#logs .line').length >= arguments[0] + 3",
            json!([first]),
        )
        .await;
    let text = browser
        .exec(
            "return [...document.querySelectorAll('#logs .line')].slice(0, 3).map(l => l.textContent).join('|')",
            json!([]),
        )
        .await;
    assert_eq!(text, "tick 1|tick 2|tick 3");
    assert_eq!(
        api.get(&format!("/v1/jobs/{id}")).await["status"],
        "Started"
    );
    browser.screenshot("job").await;

    browser.click("#stop").await;
    let stopped = api.wait_status(&id, "Error").await;
    assert_eq!(stopped["error"]["type"], "cancelled", "{stopped}");
    browser
        .wait_for(
            "the page showing the job stopped",
            WAIT,
            "const b = document.querySelector('#job-status .badge'); return b && b.dataset.status === 'Error' && document.querySelector('#error') !== null",
            json!([]),
        )
        .await;
    browser.screenshot("job-stopped").await;

    // Retry: a new job with the same script, and its page.
    browser.click("#retry").await;
    let new_id = browser
        .wait_for(
            "the retried job's page",
            WAIT,
            "const m = location.hash.match(/^#\\/jobs\\/([0-9a-f-]{36})$/); return m && m[1] !== arguments[0] && document.querySelector('#job-id') && document.querySelector('#job-id').textContent === m[1] ? m[1] : null",
            json!([id]),
        )
        .await;
    let new_id = new_id.as_str().unwrap();
    let copy = api.get(&format!("/v1/jobs/{new_id}")).await;
    assert_eq!(copy["params"]["script"], "ticks 200 200");
    api.post(&format!("/v1/jobs/{new_id}/stop"), json!({}))
        .await;
}

async fn flow_page_draws_levels_in_colours(browser: &Browser, api: &Api, ui: &str) {
    const CONTEXT: u32 = 7;
    // 1 -> {2, 3}; {2, 3} -> 4; 2 -> 5. 3 fails, so 4 fails with it; 5 keeps running.
    let jobs: [(u32, &str, &[u32]); 5] = [
        (1, "echo root", &[]),
        (2, "echo left", &[1]),
        (3, "fail right", &[1]),
        (4, "echo join", &[2, 3]),
        (5, "sleep 30", &[2]),
    ];
    for (id, script, depends) in jobs {
        api.rpc(
            "job.create",
            json!({"context_id": CONTEXT, "job": {
                "id": id, "caller_id": 0, "context_id": CONTEXT, "script": script,
                "script_type": "Sal", "timeout": 60, "retries": 0, "env_vars": {},
                "prerequisites": [], "depends": depends,
            }}),
        )
        .await;
    }
    api.rpc(
        "flow.create",
        json!({"context_id": CONTEXT, "flow": {
            "id": 1, "caller_id": 0, "context_id": CONTEXT, "jobs": [1, 2, 3, 4, 5], "env_vars": {},
        }}),
    )
    .await;
    api.rpc("flow.start", json!({"context_id": CONTEXT, "id": 1}))
        .await;

    // Opened through the flows page's form.
    browser.goto(&format!("{ui}#/flows")).await;
    browser
        .wait_for(
            "the flow form",
            WAIT,
            "return document.querySelector('#flow-open') !== null",
            json!([]),
        )
        .await;
    browser
        .type_into("#flow-open input[name=context]", &CONTEXT.to_string())
        .await;
    browser.type_into("#flow-open input[name=id]", "1").await;
    browser.click("#flow-open button").await;
    let want = json!({"1": ["0", "Finished"], "2": ["1", "Finished"], "3": ["1", "Error"], "4": ["2", "Error"], "5": ["2", "Started"]});
    browser
        .wait_for(
            "the DAG by levels, each job in its status",
            WAIT,
            "const svg = document.querySelector('#dag'); if (!svg || svg.dataset.levels !== '3') return false; \
             return Object.entries(arguments[0]).every(([id, [level, status]]) => { \
               const n = svg.querySelector(`g.node[data-job=\"${id}\"]`); \
               return n && n.dataset.level === level && n.dataset.status === status; })",
            json!([want]),
        )
        .await;
    // The colours are the status colours of the stylesheet.
    let fills = browser
        .exec(
            "return ['1', '3', '5'].map(id => getComputedStyle(document.querySelector(`#dag g.node[data-job=\"${id}\"] rect`)).fill)",
            json!([]),
        )
        .await;
    assert_eq!(
        fills,
        json!(["rgb(46, 157, 91)", "rgb(214, 69, 69)", "rgb(217, 154, 30)"]),
        "Finished green, Error red, Started amber"
    );
    browser
        .wait_for(
            "the flow's status",
            WAIT,
            "const b = document.querySelector('#flow-status .badge'); return b && b.dataset.status === 'Error'",
            json!([]),
        )
        .await;
    browser.screenshot("flow").await;
}

async fn runners_page_shows_the_pool(browser: &Browser, ui: &str) {
    browser.goto(&format!("{ui}#/runners")).await;
    let types = browser
        .wait_for(
            "the pool, up",
            WAIT,
            "const r = document.querySelector('#runners tr[data-state=\"up\"]'); return r ? r.cells[2].textContent : null",
            json!([]),
        )
        .await;
    assert_eq!(types, "OSIS, SAL, V, Python");
    browser.screenshot("runners").await;
}

async fn token_prompt_then_live_logs(browser: &Browser, api: &Api) {
    let ui = format!("http://{}/ui/", api.addr);
    browser.goto(&ui).await;
    browser
        .wait_for(
            "the token prompt",
            WAIT,
            "return !document.querySelector('#token-overlay').hidden",
            json!([]),
        )
        .await;
    browser.screenshot("token").await;

    browser.type_into("#token-input", "not-the-token").await;
    browser.click("#token-submit").await;
    browser
        .wait_for(
            "the prompt again, saying the token was refused",
            WAIT,
            "const e = document.querySelector('#token-error'); return !document.querySelector('#token-overlay').hidden && !e.hidden && e.textContent.includes('refused')",
            json!([]),
        )
        .await;

    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-submit").await;
    browser
        .wait_for(
            "the overview with the token",
            WAIT,
            "return document.querySelector('#token-overlay').hidden && document.querySelector('[data-count-status=\"Finished\"]') !== null",
            json!([]),
        )
        .await;
    let stored = browser
        .exec(
            "return [sessionStorage.getItem('hero.token'), location.href]",
            json!([]),
        )
        .await;
    assert_eq!(stored[0], TOKEN);
    assert!(!stored[1].as_str().unwrap().contains(TOKEN));

    // Live logs through the WebSocket, whose upgrade carries the token as a subprotocol.
    let id = api.submit("ticks 40 150").await;
    browser.goto(&format!("{ui}#/jobs/{id}")).await;
    browser
        .wait_for(
            "log lines over the authenticated WebSocket",
            WAIT,
            "return document.querySelectorAll('#logs .line').length >= 3",
            json!([]),
        )
        .await;
    api.wait_status(&id, "Finished").await;
    browser
        .wait_for(
            "all 40 lines and the end",
            WAIT,
            "return document.querySelectorAll('#logs .line').length === 40 && document.querySelector('#follow').textContent.includes('ended')",
            json!([]),
        )
        .await;
    // Its output and its history, read again once it ended.
    browser
        .wait_for(
            "the output and the history",
            WAIT,
            "const o = document.querySelector('#output'); const h = document.querySelector('#history').innerText; \
             return o && o.textContent === 'ticked 40' && h.includes('Created') && h.includes('Started (attempt 1)') && h.includes('Finished')",
            json!([]),
        )
        .await;
}
