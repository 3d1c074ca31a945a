//! What a deploy sends: the component, as a raw body or a multipart form, and its
//! settings, as query parameters or a JSON form field; read within `--max-upload`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use crate::deploy::compile::DeployError;
use crate::deploy::reply::{Refused, refuse};
use crate::model::app::AppSettings;
use crate::model::route::parse_route;
use crate::model::text::{parse_key_value, parse_size};

/// Settings of a deploy as query parameters: `route=/prefix` or `route=host/prefix`
/// (repeatable), `var=KEY=VALUE` (repeatable), `allow_outbound=HOST[:PORT]`
/// (repeatable), `mode`, `fuel`, `max_memory`, `timeout_ms`, `max_in_flight`, and the
/// reuse contract: `reuse=none|serial|concurrent`, `reuse_max_requests=N|LOW-HIGH`,
/// `reuse_max_concurrent`, `reuse_idle_timeout_ms`, `reuse_memory_high_water`.
pub fn settings_from_query(query: &str) -> Result<AppSettings, String> {
    let mut settings = AppSettings::default();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("invalid query string: {e}"))?;
    let number = |key: &str, value: &str| -> Result<u64, String> {
        parse_size(value).map_err(|e| format!("{key}: {e}"))
    };
    for (key, value) in pairs {
        match key.as_str() {
            "route" => settings.routes.push(parse_route(&value).map_err(|e| e.0)?),
            "var" => {
                let (k, v) = parse_key_value(&value).map_err(|e| format!("var: {e}"))?;
                settings.vars.insert(k, v);
            }
            "allow_outbound" => settings.allow_outbound.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            ),
            "mode" => settings.mode = Some(value.parse()?),
            "fuel" => settings.fuel = Some(number(&key, &value)?),
            "max_memory" => settings.max_memory = Some(number(&key, &value)?),
            "timeout_ms" => settings.timeout_ms = Some(number(&key, &value)?),
            "max_in_flight" => settings.max_in_flight = Some(number(&key, &value)?),
            reuse if reuse.starts_with("reuse") => {
                settings.reuse.set(reuse, &value).map_err(|e| e.0)?;
            }
            other => return Err(format!("unknown deploy setting {other:?}")),
        }
    }
    Ok(settings)
}

/// The upload and its settings, from a raw body or a multipart form.
pub async fn read_upload(
    req: Request<Incoming>,
    max: u64,
) -> Result<(Bytes, AppSettings), Refused> {
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max
    {
        return Err(DeployError::TooLarge(max).into());
    }
    let query_settings = settings_from_query(req.uri().query().unwrap_or(""))
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    let boundary = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let too_large = || Refused::from(DeployError::TooLarge(max));
    let Some(boundary) = boundary else {
        let body = Limited::new(req.into_body(), max as usize)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        return Ok((body, query_settings));
    };
    // Multipart: a `component` file part and an optional `settings` JSON part.
    let stream = http_body_util::BodyStream::new(req.into_body()).filter_map_data();
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max + 64 * 1024)
            .per_field(max),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let (mut component, mut settings) = (None, query_settings);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(
                multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. },
            ) => {
                return Err(too_large());
            }
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("invalid multipart body: {e}"),
                ));
            }
        };
        match field.name() {
            Some("component") => {
                component = Some(field.bytes().await.map_err(|_| too_large())?);
            }
            Some("settings") => {
                let text = field
                    .bytes()
                    .await
                    .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
                settings = serde_json::from_slice(&text).map_err(|e| {
                    refuse(StatusCode::BAD_REQUEST, format!("invalid settings: {e}"))
                })?;
            }
            other => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unexpected form field {other:?}; send `component` and optionally `settings`"
                    ),
                ));
            }
        }
    }
    let component = component
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "the form has no `component` file"))?;
    Ok((component, settings))
}

/// Turns a body stream of frames into one of data chunks, for multer.
trait FilterMapData {
    fn filter_map_data(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send;
}

impl FilterMapData for http_body_util::BodyStream<Incoming> {
    fn filter_map_data(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send {
        use futures_util::StreamExt as _;
        self.filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(e)),
            }
        })
    }
}
