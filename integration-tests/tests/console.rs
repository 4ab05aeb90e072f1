//! The web console, over plain HTTP as a browser uses it: sign in with a
//! token (a cookie), see the apps and an app's overview, scale, deploy an
//! earlier release; refusals for bad tokens and cross-site posts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::*;
use strata_proto::compute::v1 as cpb;

/// A raw request with a form body and extra headers.
async fn post_form(addr: std::net::SocketAddr, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    Reply { status, headers, body: body.to_owned() }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_shows_apps_scales_and_deploys_an_earlier_release() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr)]).await;
    let gw = GatewayUnderTest::start(config).await;
    let token = gw.admin_token.clone();

    // An app with two releases.
    let mut client = gw.compute(&token).await;
    client.create_app(cpb::CreateAppRequest { name: "shop".into() }).await.unwrap();
    let workdir = env.dir.path().join("www");
    std::fs::create_dir_all(&workdir).unwrap();
    deploy_command(&mut client, "shop", &["python3", "-m", "http.server", "$PORT"], &workdir, 1).await.unwrap();
    deploy_command(&mut client, "shop", &["python3", "-m", "http.server", "--bind", "127.0.0.1", "$PORT"], &workdir, 1)
        .await
        .unwrap();

    // Not signed in: the sign-in page.
    let page = http(gw.addr, "GET", "/console", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"token\""), "{}", page.body);
    // A bad token: refused, and said so.
    let refused = post_form(gw.addr, "/console/login", "token=strata_nope", &[]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("unknown API token"), "{}", refused.body);
    // From another site: refused.
    let foreign =
        post_form(gw.addr, "/console/login", &format!("token={token}"), &[("Origin", "https://evil.example")]).await;
    assert_eq!(foreign.status, 403);

    // Sign in: a cookie only the console gets, that scripts cannot read.
    let signed = post_form(gw.addr, "/console/login", &format!("token={token}"), &[]).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed.header("set-cookie").unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/console"));
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = [("Cookie", cookie.as_str())];

    let home = http_with(gw.addr, "GET", "/console", None, None, &with_cookie).await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("href=\"/console/apps/shop\"") && home.body.contains("v2"), "{}", home.body);
    let app = http_with(gw.addr, "GET", "/console/apps/shop", None, None, &with_cookie).await;
    assert_eq!(app.status, 200);
    assert!(app.body.contains("Deploy v1") && app.body.contains("<h3>Routes</h3>"), "{}", app.body);
    assert!(app.body.contains("Partial"), "traffic, observe and data are not behind this gateway");

    // Scale to 2, then deploy release 1 again, from the page's forms.
    let scaled = post_form(gw.addr, "/console/apps/shop/scale", "instances=2", &with_cookie).await;
    assert_eq!(scaled.status, 303, "{}", scaled.body);
    wait_instances(&mut client, "shop", 2, Some(2)).await;
    let deployed = post_form(gw.addr, "/console/apps/shop/deploy", "version=1", &with_cookie).await;
    assert_eq!(deployed.status, 303, "{}", deployed.body);
    let shop = client.get_app(cpb::GetAppRequest { app: "shop".into() }).await.unwrap().into_inner();
    assert_eq!(shop.release_version, 1);

    // The catalog page; a cross-site post with the cookie is refused.
    let catalog = http_with(gw.addr, "GET", "/console/catalog", None, None, &with_cookie).await;
    assert!(catalog.body.contains("managed service") && catalog.body.contains("shared code"), "{}", catalog.body);
    let cross = post_form(
        gw.addr,
        "/console/apps/shop/scale",
        "instances=0",
        &[("Cookie", cookie.as_str()), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(cross.status, 403);
    // Signed out: the cookie is cleared.
    let out = post_form(gw.addr, "/console/logout", "", &with_cookie).await;
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));

    gw.stop().await;
    compute.stop().await;
    env.cleanup().await;
}
