//! The baseline for the service load report: the same HTTP stack as
//! `atrest-serve` (axum on hyper and tokio, bodies bridged to blocking
//! file I/O the same way) moving the same bytes to and from files, with
//! no encryption, no keys, no catalog and no audit. An upload is written
//! to a staging file, flushed to disk and renamed into place, as the
//! local blob store does.
//!
//! `plain_server DIR [ADDR]` serves `PUT` and `GET /files/{name}`; it
//! prints `listening on http://ADDR` first.

#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

struct Files {
    dir: PathBuf,
    next: AtomicU64,
}

const CHUNK: usize = 64 * 1024;

async fn upload(State(files): State<Arc<Files>>, Path(name): Path<String>, body: Body) -> Response {
    let (chunks, mut received) = mpsc::channel::<bytes::Bytes>(8);
    let n = files.next.fetch_add(1, Ordering::Relaxed);
    let staging = files.dir.join(format!(".{n}.partial"));
    let target = files.dir.join(name.replace('/', "_"));
    let dir = files.dir.clone();
    let writing = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut file = std::fs::File::create(&staging)?;
        let mut len = 0;
        while let Some(bytes) = received.blocking_recv() {
            file.write_all(&bytes)?;
            len += bytes.len() as u64;
        }
        file.sync_all()?;
        std::fs::rename(&staging, &target)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(len)
    });
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(bytes) => {
                if chunks.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    drop(chunks);
    match writing.await {
        Ok(Ok(len)) => (StatusCode::CREATED, format!("{{\"bytes\":{len}}}")).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn download(State(files): State<Arc<Files>>, Path(name): Path<String>) -> Response {
    let path = files.dir.join(name.replace('/', "_"));
    let Ok(mut file) = std::fs::File::open(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (chunks, body) = mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0_u8; CHUNK];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = bytes::Bytes::copy_from_slice(buffer.get(..n).unwrap_or_default());
                    if chunks.blocking_send(Ok(chunk)).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    let _ = chunks.blocking_send(Err(error));
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    (
        [(header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "plain-files".into()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    std::fs::create_dir_all(&dir)?;
    let files = Arc::new(Files {
        dir,
        next: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/files/{*name}", put(upload).get(download))
            .with_state(files);
        axum::serve(listener, app).await
    })
}
