//! Packs a source directory into a tar.gz for upload, honouring
//! `.gitignore` and `.strataignore` (and leaving `.git` out).

use std::path::Path;

use anyhow::Context;

/// The packed archive and how many files went in.
pub struct Packed {
    pub bytes: Vec<u8>,
    pub files: usize,
}

/// Packs `dir`.
pub fn pack(dir: &Path) -> anyhow::Result<Packed> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    let mut files = 0;
    let walk = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .parents(false)
        .add_custom_ignore_filename(".strataignore")
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    for entry in walk {
        let entry = entry?;
        let path = entry.path();
        let relative = path.strip_prefix(dir).with_context(|| format!("{} is outside the source", path.display()))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let file_type = entry.file_type().context("unknown file type")?;
        if file_type.is_dir() {
            builder.append_dir(relative, path)?;
        } else {
            builder.append_path_with_name(path, relative).with_context(|| format!("packing {}", path.display()))?;
            files += 1;
        }
    }
    let bytes = builder.into_inner()?.finish()?;
    Ok(Packed { bytes, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_files_stay_out() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("app.py"), "print()")?;
        std::fs::write(dir.path().join(".gitignore"), "*.log\n")?;
        std::fs::write(dir.path().join(".strataignore"), "secrets/\n")?;
        std::fs::write(dir.path().join("debug.log"), "x")?;
        std::fs::create_dir(dir.path().join("secrets"))?;
        std::fs::write(dir.path().join("secrets/key"), "x")?;
        std::fs::create_dir(dir.path().join(".git"))?;
        std::fs::write(dir.path().join(".git/HEAD"), "x")?;

        let packed = pack(dir.path())?;
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed.bytes[..]));
        for entry in archive.entries()? {
            names.push(entry?.path()?.display().to_string());
        }
        names.sort();
        assert_eq!(names, [".gitignore", ".strataignore", "app.py"]);
        assert_eq!(packed.files, 3);
        Ok(())
    }
}
