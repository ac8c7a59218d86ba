//! Registration, login, remember-me, logout, rate limiting and roles, through real HTTP against
//! a real server, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::time::Duration;

use common::{session_cookie, DbKind, TestServer};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

on_both_databases!(
    register_signs_in_and_shows_home,
    duplicate_email_is_refused_whatever_its_case,
    invalid_registrations_get_field_errors_and_change_nothing,
    wrong_email_and_wrong_password_get_the_same_answer,
    remember_me_makes_a_lasting_cookie,
    logout_ends_the_session_on_the_server,
    login_is_rate_limited_per_account,
    login_is_rate_limited_per_address,
    roles_guard_pages_and_server_functions,
    forms_work_without_javascript,
    sql_looking_input_is_just_data,
    admins_disable_enable_and_promote_accounts,
    admins_delete_accounts_with_everything_they_own,
    users_change_their_own_password,
    api_tokens_expire,
);

async fn register_signs_in_and_shows_home(db: DbKind) {
    let server = TestServer::start(db).await;
    let client = server.client();

    let res = client.call("/api/auth/register", &[("email", " Ada@Example.org "), ("password", PASSWORD), ("name", "Ada Lovelace")]).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("serverfnredirect"), "client told to go home");
    let cookie = session_cookie(res.headers()).expect("session cookie set");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag: {cookie}");
    assert!(!cookie.contains("Max-Age") && !cookie.contains("Expires"), "browser-session cookie: {cookie}");
    let errors: Value = res.json().await.unwrap();
    assert_eq!(errors, json!({ "email": null, "password": null, "name": null, "form": null }));

    let me = client.me().await;
    assert_eq!(me["email"], "ada@example.org");
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["role"], "user");

    let home = client.get("/home").await;
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("Welcome, <!>Ada Lovelace") || html.contains("Welcome, Ada Lovelace"), "{html}");
    server.stop().await;
}

async fn duplicate_email_is_refused_whatever_its_case(db: DbKind) {
    let server = TestServer::start(db).await;
    assert_eq!(server.client().register("bob@example.org", PASSWORD).await.status(), 200);
    let res = server.client().register("BOB@example.org", "another password").await;
    assert_eq!(res.status(), 200);
    let errors: Value = res.json().await.unwrap();
    assert_eq!(errors["email"], "email_taken");
    // The first account's password still works; the second attempt changed nothing.
    let client = server.client();
    client.login("bob@example.org", PASSWORD).await;
    assert_eq!(client.me().await["email"], "bob@example.org");
    server.stop().await;
}

async fn invalid_registrations_get_field_errors_and_change_nothing(db: DbKind) {
    let server = TestServer::start(db).await;
    let client = server.client();

    // (form fields, field with the error, error code)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], "email", "email_missing"),
        (vec![("email", "".into()), ("password", "".into())], "email", "email_missing"),
        (vec![("email", "not-an-email".into()), ("password", PASSWORD.into())], "email", "email_invalid"),
        (vec![("email", "c@example.org".into()), ("password", "short".into())], "password", "password_too_short"),
        (vec![("email", "c@example.org".into()), ("password", "p".repeat(600))], "password", "password_too_long"),
        (vec![("email", "c@example.org".into()), ("password", PASSWORD.into()), ("name", "n".repeat(81))], "name", "name_too_long"),
    ];
    for (form, field, code) in cases {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = client.call("/api/auth/register", &pairs).await;
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        let errors: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(errors[field], code, "{pairs:?} -> {body}");
        assert!(session_cookie(&reqwest::header::HeaderMap::new()).is_none());
    }

    // A 10 MB password field is refused on its Content-Length, before it is read, and the
    // server keeps serving. The server may close the connection while the client is still
    // writing, so the client sees either the 413 or a broken pipe; never anything else.
    let huge = "x".repeat(10 * 1024 * 1024);
    let res = client
        .http
        .post(server.url("/api/auth/register"))
        .header("accept", "application/json")
        .form(&[("email", "d@example.org"), ("password", huge.as_str())])
        .send()
        .await;
    match res {
        Ok(res) => assert_eq!(res.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }

    // A body that is not UTF-8.
    let res = client
        .http
        .post(server.url("/api/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, 0x00, b'=', 0xc3, 0x28])
        .send()
        .await
        .unwrap();
    assert!(res.status() == 400 || res.status() == 200, "got {}", res.status());

    // Arguments of the wrong shape are the caller's mistake: 400, not 500.
    let res = client
        .http
        .post(server.url("/api/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email[x][y]=1&email=2&password[]=3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Nothing was created along the way.
    assert_eq!(client.me().await, Value::Null);
    assert_eq!(server.client().login("c@example.org", PASSWORD).await.json::<Value>().await.unwrap()["form"], "invalid_credentials");
    assert_eq!(server.client().get("/").await.status(), 200);
    server.stop().await;
}

async fn wrong_email_and_wrong_password_get_the_same_answer(db: DbKind) {
    let server = TestServer::start(db).await;
    server.client().register("eve@example.org", PASSWORD).await;

    let wrong_password = server.client().login("eve@example.org", "not the password").await;
    let wrong_email = server.client().login("nobody@example.org", PASSWORD).await;
    let malformed_email = server.client().login("nobody", PASSWORD).await;
    assert_eq!(wrong_password.status(), 200);
    assert_eq!(wrong_email.status(), 200);
    assert!(session_cookie(wrong_password.headers()).is_none());
    let a = wrong_password.text().await.unwrap();
    let b = wrong_email.text().await.unwrap();
    let c = malformed_email.text().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert!(a.contains("invalid_credentials"));
    server.stop().await;
}

async fn remember_me_makes_a_lasting_cookie(db: DbKind) {
    let server = TestServer::start(db).await;
    server.client().register("rem@example.org", PASSWORD).await;
    let client = server.client();
    let res = client.call("/api/auth/login", &[("email", "rem@example.org"), ("password", PASSWORD), ("remember", "on")]).await;
    let cookie = session_cookie(res.headers()).expect("cookie");
    let max_age: i64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("remembered cookie lasts: {cookie}"));
    assert!((29 * 86400..=30 * 86400).contains(&max_age), "{max_age}");
    assert_eq!(client.me().await["email"], "rem@example.org");

    let res = server.client().login("rem@example.org", PASSWORD).await;
    let cookie = session_cookie(res.headers()).expect("cookie");
    assert!(!cookie.contains("Max-Age"), "unremembered: browser session: {cookie}");
    server.stop().await;
}

async fn logout_ends_the_session_on_the_server(db: DbKind) {
    let server = TestServer::start(db).await;
    let client = server.client();
    let res = client.register("out@example.org", PASSWORD).await;
    let cookie = session_cookie(res.headers()).expect("cookie");
    let pair = cookie.split(';').next().unwrap().to_string();

    // A live feed opened with the session streams while it stands...
    let mut feed = reqwest::Client::new().get(server.url("/live/jobs")).header("cookie", pair.clone()).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), feed.chunk()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: jobs"), "{first:?}");

    let res = client.call("/api/auth/logout", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(client.me().await, Value::Null);
    let home = client.get("/home").await;
    assert_eq!(home.status(), 303);

    // ...and ends once it is gone: the browser is shown nothing more.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = feed.chunk().await.unwrap() {
            assert!(!String::from_utf8_lossy(&chunk).contains("event:"), "an event after logout: {chunk:?}");
        }
    })
    .await;
    assert!(ended.is_ok(), "the live feed went on after logout");

    // Replaying the old cookie gets nothing: the session is gone from the database.
    let replay = reqwest::Client::new().get(server.url("/api/auth/me")).header("cookie", pair).send().await.unwrap();
    assert_eq!(replay.json::<Value>().await.unwrap(), Value::Null);
    server.stop().await;
}

async fn login_is_rate_limited_per_account(db: DbKind) {
    let server = TestServer::start_with(db, |c| c.login_per_account_per_min = 3).await;
    server.client().register("rl@example.org", PASSWORD).await;
    for _ in 0..3 {
        let res = server.client().login("rl@example.org", "wrong password").await;
        assert_eq!(res.status(), 200);
    }
    // Even the right password waits now, and the answer says for how long.
    let res = server.client().login("rl@example.org", PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(session_cookie(res.headers()).is_none());
    // Casing does not buy more attempts.
    assert_eq!(server.client().login("RL@example.org", PASSWORD).await.status(), 429);
    // Other accounts are unaffected.
    server.client().register("other@example.org", PASSWORD).await;
    let other = server.client();
    assert_eq!(other.login("other@example.org", PASSWORD).await.status(), 200);
    assert_eq!(other.me().await["email"], "other@example.org");
    server.stop().await;
}

async fn login_is_rate_limited_per_address(db: DbKind) {
    let server = TestServer::start_with(db, |c| c.login_per_ip_per_min = 4).await;
    for i in 0..4 {
        let res = server.client().login(&format!("spray{i}@example.org"), PASSWORD).await;
        assert_eq!(res.status(), 200);
    }
    let res = server.client().login("spray9@example.org", PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // A browser without the WASM is sent back to the form with the reason instead.
    let res = server.client().browser_post("/api/auth/login", "/login", &[("email", "spray9@example.org"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 302);
    assert!(res.headers()["location"].to_str().unwrap().contains("err_form=rate_limited"));
    server.stop().await;
}

async fn roles_guard_pages_and_server_functions(db: DbKind) {
    let server = TestServer::start(db).await;
    let anon = server.client();
    let res = anon.get("/home").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=%2Fhome");
    assert_eq!(anon.get("/admin").await.status(), 303);
    assert_eq!(anon.http.get(server.url("/api/admin/overview")).send().await.unwrap().status(), 401);

    let user = server.client();
    user.register("user@example.org", PASSWORD).await;
    let page = user.get("/admin").await;
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("Admins only"));
    assert_eq!(user.http.get(server.url("/api/admin/overview")).send().await.unwrap().status(), 403);

    let state = server::build_state(&server.config).await.unwrap();
    let said = server::admin_cli::create_admin(&state.db, "root@example.org", PASSWORD).await.unwrap();
    assert!(said.contains("created"), "{said}");
    let admin = server.client();
    admin.login("root@example.org", PASSWORD).await;
    assert_eq!(admin.me().await["role"], "admin");
    let page = admin.get("/admin").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("user@example.org"));
    let overview: Value = admin.http.get(server.url("/api/admin/overview")).send().await.unwrap().json().await.unwrap();
    assert_eq!(overview["users"].as_array().unwrap().len(), 2);
    assert_eq!(overview["admins"], 1);

    // Promoting an existing user: their old sessions end with the old password.
    let said = server::admin_cli::create_admin(&state.db, "user@example.org", "a new password").await.unwrap();
    assert!(said.contains("now an admin"), "{said}");
    assert_eq!(user.me().await, Value::Null);
    server.stop().await;
}

async fn forms_work_without_javascript(db: DbKind) {
    let server = TestServer::start(db).await;
    let browser = server.client();

    // The pages render fully on the server.
    let page = browser.get("/register").await.text().await.unwrap();
    assert!(page.contains(r#"action="/api/auth/register""#), "form posts without WASM");

    let res = browser.browser_post("/api/auth/register", "/register", &[("email", "nojs@example"), ("password", "short")]).await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/register?"), "{location}");
    let page = browser.get(&location).await.text().await.unwrap();
    assert!(page.contains("That does not look like an email address."));
    assert!(page.contains("Use at least 8 characters."));
    assert!(page.contains(r#"value="nojs@example""#), "typed email kept");

    let res = browser.browser_post("/api/auth/register", "/register", &[("email", "nojs@example.org"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/home");
    assert_eq!(browser.get("/home").await.status(), 200);

    // Login with a way back to where the visitor was going.
    let other = server.client();
    let res = other
        .browser_post(
            "/api/auth/login",
            "/login?next=%2Fadmin",
            &[("email", "nojs@example.org"), ("password", "wrong!!!"), ("next", "/admin")],
        )
        .await;
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("err_form=invalid_credentials") && location.contains("next=%2Fadmin"), "{location}");
    let page = other.get(&location).await.text().await.unwrap();
    assert!(page.contains("Wrong email or password."));
    let res = other
        .browser_post("/api/auth/login", "/login", &[("email", "nojs@example.org"), ("password", PASSWORD), ("next", "//evil.example")])
        .await;
    assert_eq!(res.headers()["location"], "/home", "offsite next ignored");
    server.stop().await;
}

async fn sql_looking_input_is_just_data(db: DbKind) {
    let server = TestServer::start(db).await;
    let client = server.client();
    let res = client.register("' or 1=1 --", PASSWORD).await;
    assert_eq!(res.json::<Value>().await.unwrap()["email"], "email_invalid");
    // A legal address full of SQL punctuation registers and logs in as itself.
    let email = "o'brien--;drop@example.org";
    let res = client.register(email, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let again = server.client();
    again.login(email, PASSWORD).await;
    assert_eq!(again.me().await["email"], email);
    let res = server.client().login("x' or '1'='1", "' or '1'='1").await;
    assert_eq!(res.json::<Value>().await.unwrap()["form"], "invalid_credentials");
    server.stop().await;
}

/// An admin disables an account: its session and API token are refused at once, it cannot sign
/// in (and is told why only with the right password), and its queued job waits, saying why,
/// until the account is enabled again. An admin cannot disable or demote themselves; a new role
/// ends the account's sessions.
async fn admins_disable_enable_and_promote_accounts(db: DbKind) {
    use common::fleet::{fixture, json, Agent, User};
    let server = TestServer::start(db).await;
    let (admin, _) = server.signed_in_admin(PASSWORD).await;
    let admin_id = admin.me().await["id"].as_str().unwrap().to_string();
    let user = User::new(&server, "worker@example.org").await;
    let user_id = user.web.me().await["id"].as_str().unwrap().to_string();

    // A job waits in the queue: the user's node has no agent yet.
    json(user.upload("iris", "m.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    let (node_id, token) = user.add_node("box").await;
    let job = json(user.submit("iris", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
    let job_id = job["id"].as_str().unwrap().to_string();

    let res = admin.call("/api/admin/set-disabled", &[("id", &user_id), ("disabled", "true")]).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_eq!(user.web.me().await, Value::Null, "the session ended");
    assert_eq!(user.get("/api/v1/jobs").await.status(), 401, "the token is refused");
    let wrong = server.client().login("worker@example.org", "not the password").await.text().await.unwrap();
    assert!(wrong.contains("invalid_credentials") && !wrong.contains("account_disabled"), "{wrong}");
    let right = server.client().login("worker@example.org", PASSWORD).await.text().await.unwrap();
    assert!(right.contains("account_disabled"), "{right}");
    let listed: Value = admin.http.get(server.url("/api/admin/accounts?q=WORKER")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["disabled"], true);

    // Its node comes up, but the job is not dispatched while the account is disabled.
    let _agent = Agent::start(&server, &token, "box", &[]);
    let admin_view = || async {
        let res =
            admin.http.get(server.url(&format!("/api/v1/jobs/{job_id}"))).bearer_auth(admin_token(&admin).await).send().await.unwrap();
        res.json::<Value>().await.unwrap()
    };
    let start = std::time::Instant::now();
    loop {
        let nodes: Value = admin.http.get(server.url("/api/nodes/all")).send().await.unwrap().json().await.unwrap();
        if nodes.as_array().unwrap().iter().any(|n| n["id"] == node_id.as_str() && n["status"] == "active") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the node never came up: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = admin_view().await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert!(waiting["waiting"].as_str().unwrap().contains("disabled"), "{waiting}");

    // Admins cannot lock themselves out.
    let res = admin.call("/api/admin/set-disabled", &[("id", &admin_id), ("disabled", "true")]).await;
    assert_eq!(res.status(), 422);
    let res = admin.call("/api/admin/set-role", &[("id", &admin_id), ("role", "user")]).await;
    assert_eq!(res.status(), 422);

    // Enabled again: it signs in and its job runs.
    let res = admin.call("/api/admin/set-disabled", &[("id", &user_id), ("disabled", "false")]).await;
    assert_eq!(res.status(), 200);
    let start = std::time::Instant::now();
    while admin_view().await["status"] != "succeeded" {
        assert!(start.elapsed() < Duration::from_secs(30), "the job never ran: {}", admin_view().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = server.client();
    again.login("worker@example.org", PASSWORD).await;
    assert_eq!(again.me().await["role"], "user");

    // Promoted: the old session ends, the next one is an admin's.
    let res = admin.call("/api/admin/set-role", &[("id", &user_id), ("role", "admin")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(again.me().await, Value::Null);
    again.login("worker@example.org", PASSWORD).await;
    assert_eq!(again.me().await["role"], "admin");
    server.stop().await;
}

/// An admin deletes an account with an application (and its default input), a finished job
/// whose input and result are files, a small finished one kept in the database, a queued job,
/// a node with a running agent and an API token: every row and file of it goes, its session and token are refused, another account's
/// data stays as it was. The form needs its "I understand"; only admins may, and not on their
/// own account; a plain form post comes back to the admin page, which says what went.
async fn admins_delete_accounts_with_everything_they_own(db: DbKind) {
    use common::fleet::{fixture, json, Agent, User};
    let server = TestServer::start(db).await;
    let (admin, state) = server.signed_in_admin(PASSWORD).await;
    let admin_id = admin.me().await["id"].as_str().unwrap().to_string();
    let gone = User::new(&server, "gone@example.org").await;
    let gone_id = gone.web.me().await["id"].as_str().unwrap().to_string();
    let stays = User::new(&server, "stays@example.org").await;
    let stays_id = stays.web.me().await["id"].as_str().unwrap().to_string();

    // The account to delete: a model with a default input, a node with its agent, a finished
    // job whose input and result are over 64 KiB (files), and a job queued while its node is
    // disabled.
    let iris = String::from_utf8(std::fs::read(fixture("iris.csv")).unwrap()).unwrap();
    let model = std::fs::read(fixture("iris_logreg.onnx")).unwrap();
    let app = json(gone.upload("iris", "m.onnx", model.clone(), Some(iris.clone().into_bytes())).await, 201).await;
    // A schedule of its model, with a CSV of its own (kept in the database), once a year.
    let form = reqwest::multipart::Form::new()
        .text("application", "iris")
        .text("cron", "0 3 1 1 *")
        .part("input", reqwest::multipart::Part::bytes(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec()).file_name("mine.csv"));
    json(gone.post_form("/api/v1/schedules", form).await, 201).await;
    let app_id = app["id"].as_str().unwrap().to_string();
    let (node_id, token) = gone.add_node("box").await;
    let _agent = Agent::start(&server, &token, "box", &[]);
    gone.wait_node_active(&node_id).await;
    let body: String = iris.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let big = format!("{}\n{}", iris.lines().next().unwrap(), body.repeat(30));
    assert!(big.len() > shared::jobs::INLINE_MAX);
    let done = json(gone.submit("iris", Some(big.into_bytes())).await, 201).await;
    let done_id = done["id"].as_str().unwrap().to_string();
    assert_eq!(gone.wait_job(&done_id).await["status"], "succeeded");
    let inline_of = |job: String| {
        let pool = state.db.pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as("select count(*) from inline_artifacts where key like 'inline:jobs/' || $1 || '/%'")
                .bind(job)
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    // A small job's input and result are kept in the database instead.
    let small = json(gone.submit("iris", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
    let small_id = small["id"].as_str().unwrap().to_string();
    assert_eq!(gone.wait_job(&small_id).await["status"], "succeeded");
    assert_eq!(inline_of(small_id.clone()).await, 1, "its result is in the database");
    let res = gone.web.call("/api/nodes/set-state", &[("id", &node_id), ("state", "disabled")]).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let queued = json(gone.submit("iris", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let (queued_input,): (String,) =
        sqlx::query_as("select input_key from jobs where id = $1").bind(&queued_id).fetch_one(&state.db.pool).await.unwrap();
    assert!(queued_input.starts_with("inline:"), "{queued_input}");
    let artifacts = server.data_dir.path().join("artifacts");
    assert!(artifacts.join(format!("apps/{app_id}/default-input.csv")).exists());
    assert_eq!(files_under(&artifacts.join(format!("jobs/{done_id}"))).len(), 1, "the result is a file");
    assert_eq!(files_under(&artifacts.join("inputs")).len(), 1, "the big input is a file");

    // Another account's data, which must stay as it is.
    let other_app = json(stays.upload("mine", "m.onnx", model, None).await, 201).await;
    let other_app_id = other_app["id"].as_str().unwrap().to_string();
    let (other_node, _) = stays.add_node("other-box").await;
    let other_job = json(stays.submit("mine", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
    let other_job_id = other_job["id"].as_str().unwrap().to_string();
    let other_files = files_under(&artifacts.join(format!("apps/{other_app_id}")));
    assert_eq!(other_files.len(), 1);
    let other_state = || async {
        let (job, node) = (stays.job(&other_job_id).await, stays.node(&other_node).await);
        (job["status"].clone(), job["attempt"].clone(), job["app_id"].clone(), node["status"].clone(), node["admin_state"].clone())
    };
    let other_before = other_state().await;
    assert_eq!(other_before.0, "queued");

    let delete = |client: &common::Client, id: String, confirm: &'static str| {
        let url = client.url("/api/admin/delete-account");
        let http = client.http.clone();
        async move {
            http.post(url)
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&[("id", id.as_str()), ("confirm", confirm)])
                .send()
                .await
                .unwrap()
        }
    };
    // Refused: a user (even about themselves), an admin about their own account, an admin who
    // did not tick "I understand", and an account that does not exist.
    assert_eq!(delete(&stays.web, gone_id.clone(), "yes").await.status(), 403);
    assert_eq!(delete(&gone.web, gone_id.clone(), "yes").await.status(), 403);
    let own = delete(&admin, admin_id.clone(), "yes").await;
    assert_eq!(own.status(), 422);
    assert!(own.text().await.unwrap().contains("your own account"));
    let unconfirmed = delete(&admin, gone_id.clone(), "").await;
    assert_eq!(unconfirmed.status(), 422);
    assert!(unconfirmed.text().await.unwrap().contains("I understand"));
    assert_eq!(delete(&admin, "00000000-0000-4000-8000-000000000000".into(), "yes").await.status(), 404);
    assert_eq!(gone.web.me().await["email"], "gone@example.org", "nothing changed");
    assert_eq!(gone.get("/api/v1/jobs").await.status(), 200);

    // The admin page offers it, saying what happens, before any script runs.
    let page = admin.get("/admin").await.text().await.unwrap();
    assert!(page.contains(r#"action="/api/admin/delete-account""#), "a plain form");
    assert!(page.contains("I understand") && page.contains("move to other nodes") && page.contains("cannot be undone"));

    // A plain form post: deleted, and back to the admin page, which says what went.
    let res = admin.browser_post("/api/admin/delete-account", "/admin", &[("id", &gone_id), ("confirm", "yes")]).await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/admin?deleted=gone%40example.org"), "{location}");
    let page = admin.get(&location).await.text().await.unwrap();
    assert!(
        page.contains(
            "Deleted gone@example.org and everything it owned: 3 jobs (1 unfinished, cancelled), 1 application, 1 node (removed)"
        ) && page.contains("Its 1 schedule went too."),
        "{page}"
    );

    // Every row is gone...
    let count = |sql: &'static str, id: String| {
        let pool = state.db.pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.unwrap();
            n
        }
    };
    for (sql, id) in [
        ("select count(*) from users where id = $1", &gone_id),
        ("select count(*) from sessions where user_id = $1", &gone_id),
        ("select count(*) from api_tokens where user_id = $1", &gone_id),
        ("select count(*) from applications where owner_id = $1", &gone_id),
        ("select count(*) from schedules where owner_id = $1", &gone_id),
        ("select count(*) from jobs where owner_id = $1", &gone_id),
        ("select count(*) from nodes where owner_id = $1", &gone_id),
        ("select count(*) from job_events where job_id = $1", &done_id),
        ("select count(*) from job_events where job_id = $1", &queued_id),
        ("select count(*) from job_attempts where job_id = $1", &done_id),
        ("select count(*) from job_events where job_id = $1", &small_id),
        ("select count(*) from node_events where node_id = $1", &node_id),
        ("select count(*) from node_samples where node_id = $1", &node_id),
        ("select count(*) from node_tokens where node_id = $1", &node_id),
    ] {
        assert_eq!(count(sql, id.clone()).await, 0, "{sql} {id}");
    }
    assert_eq!(inline_of(small_id.clone()).await, 0, "the result kept in the database went too");
    assert_eq!(count("select count(*) from inline_artifacts where key = $1", queued_input.clone()).await, 0, "nor its small input");
    let (inline,): (i64,) =
        sqlx::query_as("select count(*) from inline_artifacts i join jobs j on j.input_key = i.key where j.owner_id = $1")
            .bind(&stays_id)
            .fetch_one(&state.db.pool)
            .await
            .unwrap();
    assert_eq!(inline, 1, "the other account's inline input stays");
    // ...and every file: the model, its default input, the job's input, result and log.
    assert!(!artifacts.join(format!("apps/{app_id}")).exists());
    assert!(!artifacts.join(format!("jobs/{done_id}")).exists());
    assert!(files_under(&artifacts.join("inputs")).is_empty());
    // Its session and its token are refused; it cannot sign in.
    assert_eq!(gone.web.me().await, Value::Null);
    assert_eq!(gone.get("/api/v1/jobs").await.status(), 401);
    let again = server.client().login("gone@example.org", PASSWORD).await.text().await.unwrap();
    assert!(again.contains("invalid_credentials"), "{again}");
    // Its node is gone from the admin's resource view.
    let listed: Value = admin.http.get(admin.url("/api/nodes/all")).send().await.unwrap().json().await.unwrap();
    assert!(!listed.as_array().unwrap().iter().any(|n| n["id"] == node_id.as_str()), "{listed}");

    // The other account is untouched.
    assert_eq!(stays.web.me().await["email"], "stays@example.org");
    assert_eq!(other_state().await, other_before);
    assert_eq!(files_under(&artifacts.join(format!("apps/{other_app_id}"))), other_files);
    assert_eq!(json(stays.get("/api/v1/applications").await, 200).await.as_array().unwrap().len(), 1);
    let listed: Value = admin.http.get(admin.url("/api/admin/accounts")).send().await.unwrap().json().await.unwrap();
    let emails: Vec<&str> = listed.as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["root@example.org", "stays@example.org"]);

    delete_node_queue(&server, &node_id).await;
    server.stop().await;
}

/// The files under `dir` (none when it does not exist), sorted.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Deletes a node's queue on the shared broker: the test server removes the queues of the nodes
/// still in its database when it stops, and a deleted account's are not.
async fn delete_node_queue(server: &TestServer, node_id: &str) {
    let topology = server::broker::Topology::new(&server.config.amqp_namespace);
    let conn = lapin::Connection::connect(&server.config.amqp_url, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.queue_delete(&topology.node_queue(node_id), Default::default()).await.unwrap();
    conn.close(200, "test done").await.unwrap();
}

/// A new API token of the signed-in `client`'s.
async fn admin_token(client: &common::Client) -> String {
    let res = client.call("/api/tokens/create", &[("name", "admin-view")]).await;
    res.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string()
}

/// The current password first, then a new one as registration checks it; every other session
/// of the account ends, this one goes on, and only the new password signs in.
async fn users_change_their_own_password(db: DbKind) {
    let server = TestServer::start(db).await;
    let me = server.client();
    me.register("changer@example.org", PASSWORD).await;
    let elsewhere = server.client();
    elsewhere.login("changer@example.org", PASSWORD).await;
    assert_eq!(elsewhere.me().await["email"], "changer@example.org");

    let wrong = me.call("/api/auth/password", &[("current", "not it at all"), ("password", "a brand new password")]).await;
    assert!(wrong.text().await.unwrap().contains("wrong_password"));
    let short = me.call("/api/auth/password", &[("current", PASSWORD), ("password", "short")]).await;
    assert!(short.text().await.unwrap().contains("password_too_short"));
    assert_eq!(elsewhere.me().await["email"], "changer@example.org", "refused changes end nothing");

    let res = me.call("/api/auth/password", &[("current", PASSWORD), ("password", "a brand new password")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(me.me().await["email"], "changer@example.org", "this browser stays signed in");
    assert_eq!(elsewhere.me().await, Value::Null, "every other session ended");
    let old = server.client().login("changer@example.org", PASSWORD).await.text().await.unwrap();
    assert!(old.contains("invalid_credentials"), "{old}");
    let new = server.client();
    new.login("changer@example.org", "a brand new password").await;
    assert_eq!(new.me().await["email"], "changer@example.org");
    server.stop().await;
}

/// A token made to expire works until then and is refused after, like a revoked one; a lifetime
/// that is no number of days is refused and makes nothing.
async fn api_tokens_expire(db: DbKind) {
    let server = TestServer::start(db).await;
    let me = server.client();
    me.register("expiring@example.org", PASSWORD).await;
    let res = me.call("/api/tokens/create", &[("name", "bad"), ("expires_in_days", "forever")]).await;
    assert_eq!(res.status(), 422);
    let res = me.call("/api/tokens/create", &[("name", "short-lived"), ("expires_in_days", "30")]).await;
    let new: Value = res.json().await.unwrap();
    let (id, secret) = (new["token"]["id"].as_str().unwrap().to_string(), new["secret"].as_str().unwrap().to_string());
    let in_30_days = new["token"]["expires_at_ms"].as_i64().unwrap() - new["token"]["created_at_ms"].as_i64().unwrap();
    assert_eq!(in_30_days, 30 * 86_400_000);
    let api = |token: String| {
        let http = reqwest::Client::new();
        let url = server.url("/api/v1/jobs");
        async move { http.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(api(secret.clone()).await, 200);
    let listed: Value = me.http.get(server.url("/api/tokens/mine")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "the refused one made nothing: {listed}");

    // Its time comes (moved in the database rather than waited for).
    let state = server::build_state(&server.config).await.unwrap();
    sqlx::query("update api_tokens set expires_at = $1 where id = $2")
        .bind(aiedge_store::now_ms() - 1)
        .bind(&id)
        .execute(&state.db.writer)
        .await
        .unwrap();
    assert_eq!(api(secret).await, 401);
    server.stop().await;
}
