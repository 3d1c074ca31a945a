//! The routes both SDK fixtures serve, written once: `sdk-sync` runs them from a plain
//! `fn` handler (pool), `sdk-async` from an `async fn` handler (loop), and the tests
//! check that both answer every request the same way.
//!
//! | route | answers |
//! |---|---|
//! | `GET /` | `hello from the sdk` |
//! | `GET /users/{id}` | `{"id": ID}`, or 400 if ID is not a number |
//! | `POST /greet` | JSON `{"name", "n"}` in, `{"greeting", "double"}` out; 400/415 on bad input |
//! | `GET /add?a=&b=` | the sum as text, 400 on a bad query |
//! | `GET /status/{code}` | that status |
//! | `GET /headers` | 202, `x-custom: yes`, an HTML body |
//! | `GET /config/{key}` | the configuration variable, 404 if unset |
//! | `GET /stream?chunks=N` | N lines, streamed with `Body::from_chunks` |
//! | `GET /error` | 400 from an `Error` |
//! | `GET /log` | logs a line at each level, answers `logged` |
//! | `GET /panic` | panics |
//! | `PUT /shout` | the body upper-cased, 400 if it is not UTF-8; logs the body's size |

use serde::{Deserialize, Serialize};
use wasmloop_sdk::{
    Body, Error, Html, Json, Request, RequestExt, Router, StatusCode, config, debug, error, info,
    warn,
};

#[derive(Deserialize)]
struct Greet {
    name: String,
    n: i64,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
    double: i64,
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct Chunks {
    chunks: usize,
}

/// The shared routes.
pub fn router() -> Router {
    Router::new()
        .get("/", |_: Request| "hello from the sdk\n")
        .get("/users/{id}", |req: Request| -> Result<_, Error> {
            let id: u64 = req
                .param("id")
                .unwrap_or_default()
                .parse()
                .map_err(|_| Error::bad_request("id must be a number"))?;
            Ok(Json(serde_json::json!({ "id": id })))
        })
        .post("/greet", |req: Request| -> Result<_, Error> {
            let Greet { name, n } = req.json()?;
            Ok(Json(Greeting {
                greeting: format!("hello {name}"),
                double: n * 2,
            }))
        })
        .get("/add", |req: Request| -> Result<_, Error> {
            let Add { a, b } = req.query()?;
            Ok(format!("{}\n", a + b))
        })
        .get("/status/{code}", |req: Request| {
            let code = req.param("code").unwrap_or_default().parse().unwrap_or(500);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("status {code}\n"))
        })
        .get("/headers", |_: Request| {
            (
                StatusCode::ACCEPTED,
                [("x-custom", "yes")],
                Html("<p>hi</p>"),
            )
        })
        .get("/config/{key}", |req: Request| {
            config::get(req.param("key").unwrap_or_default())
        })
        .get("/stream", |req: Request| -> Result<_, Error> {
            let Chunks { chunks } = req.query()?;
            Ok(Body::from_chunks(
                (0..chunks).map(|i| format!("chunk {i}\n")),
            ))
        })
        .get("/error", |_: Request| -> Result<&'static str, Error> {
            Err(Error::bad_request("this route always fails"))
        })
        .get("/log", |_: Request| {
            debug!("sdk debug line");
            info!("sdk info line");
            warn!("sdk warn line");
            error!("sdk error line");
            "logged\n"
        })
        .get("/panic", |_: Request| -> &'static str {
            panic!("the handler panicked")
        })
        .put("/shout", |req: Request| -> Result<_, Error> {
            info!("shout of {} bytes", req.body().len().unwrap_or_default());
            Ok(req.text()?.to_uppercase())
        })
}
