//! `json-api`: a router with path parameters, query strings and JSON in and out, in a
//! plain `fn` handler (the host's pool).
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p json-api
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/json_api.wasm
//! curl http://127.0.0.1:8080/users/1
//! curl 'http://127.0.0.1:8080/users?role=admin'
//! curl -X POST -H 'content-type: application/json' -d '{"name":"Grace","role":"admin"}' \
//!     http://127.0.0.1:8080/users
//! ```
//!
//! Every request gets a fresh instance, so nothing a request creates outlives it: the
//! users below are a fixed table, and `POST /users` validates and answers without
//! storing.

use serde::{Deserialize, Serialize};
use wasmloop_sdk::{
    Error, IntoResponse, Json, Request, RequestExt, Response, Router, StatusCode, handler,
};

#[derive(Clone, Serialize)]
struct User {
    id: u32,
    name: &'static str,
    role: &'static str,
}

const USERS: &[User] = &[
    User {
        id: 1,
        name: "Ada",
        role: "admin",
    },
    User {
        id: 2,
        name: "Alan",
        role: "member",
    },
    User {
        id: 3,
        name: "Barbara",
        role: "member",
    },
];

#[derive(Deserialize)]
struct Filter {
    role: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    10
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
}

#[derive(Serialize)]
struct Created {
    id: u32,
    name: String,
    role: String,
}

fn list(req: Request) -> Result<Json<Vec<User>>, Error> {
    let filter: Filter = req.query()?;
    let users = USERS
        .iter()
        .filter(|u| filter.role.as_deref().is_none_or(|role| u.role == role))
        .take(filter.limit)
        .cloned()
        .collect();
    Ok(Json(users))
}

fn show(req: Request) -> Result<Json<User>, Error> {
    let id: u32 = req
        .param("id")
        .unwrap_or_default()
        .parse()
        .map_err(|_| Error::bad_request("the user id must be a number"))?;
    USERS
        .iter()
        .find(|u| u.id == id)
        .cloned()
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("no user {id}")))
}

fn create(req: Request) -> Result<impl IntoResponse, Error> {
    let new: NewUser = req.json()?;
    if new.name.trim().is_empty() {
        return Err(Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name must not be empty",
        ));
    }
    let id = USERS.len() as u32 + 1;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/users/{id}"))],
        Json(Created {
            id,
            name: new.name,
            role: new.role,
        }),
    ))
}

#[handler]
fn api(req: Request) -> Response {
    Router::new()
        .get("/users", list)
        .post("/users", create)
        .get("/users/{id}", show)
        .handle(req)
}
