//! Reading and following an app's logs: every instance writes its own file
//! under `logs/<app>/`; a reader sends the last lines of each, then, when
//! following, whatever is appended (new instances' files included).

use std::{
    collections::HashMap,
    io::SeekFrom,
    path::{Path, PathBuf},
    time::Duration,
};

use strata_proto::compute::v1::LogLine;
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// How often a follower looks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

fn instance_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

async fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let modified = entry.metadata().await.and_then(|m| m.modified()).ok();
                files.push((modified, path));
            }
        }
    }
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Sends the last `tail` lines of each log in `dir`, then follows them until
/// `stop` fires or the receiver goes away.
pub async fn stream(dir: PathBuf, tail: usize, follow: bool, out: mpsc::Sender<LogLine>, stop: CancellationToken) {
    let mut offsets: HashMap<PathBuf, u64> = HashMap::new();
    for path in log_files(&dir).await {
        let Ok(text) = tokio::fs::read(&path).await else { continue };
        offsets.insert(path.clone(), text.len() as u64);
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let instance_id = instance_of(&path);
        for line in &lines[lines.len().saturating_sub(tail)..] {
            if out.send(LogLine { instance_id: instance_id.clone(), text: (*line).to_owned() }).await.is_err() {
                return;
            }
        }
    }
    if !follow {
        return;
    }
    let mut partial: HashMap<PathBuf, String> = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = out.closed() => return,
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        for path in log_files(&dir).await {
            let offset = offsets.entry(path.clone()).or_insert(0);
            let Ok(mut file) = tokio::fs::File::open(&path).await else { continue };
            let Ok(len) = file.metadata().await.map(|m| m.len()) else { continue };
            if len < *offset {
                *offset = 0; // truncated
            }
            if len == *offset || file.seek(SeekFrom::Start(*offset)).await.is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).await.is_err() {
                continue;
            }
            *offset += bytes.len() as u64;
            let buffer = partial.entry(path.clone()).or_default();
            buffer.push_str(&String::from_utf8_lossy(&bytes));
            let instance_id = instance_of(&path);
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let text = line.trim_end_matches(['\n', '\r']).to_owned();
                if out.send(LogLine { instance_id: instance_id.clone(), text }).await.is_err() {
                    return;
                }
            }
        }
    }
}
