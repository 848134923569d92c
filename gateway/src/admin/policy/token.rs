//! The admin token: given, or made once and kept in the data directory.

use std::path::Path;

use anyhow::Context;

/// The admin token's file name inside the data directory, when none is given.
pub const TOKEN_FILE: &str = "admin.token";

/// The admin token: `given` (flag or environment), else the data directory's token file,
/// created with a fresh random token when missing.
pub fn admin_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(t) = given {
        if t.len() < 16 {
            anyhow::bail!("the admin token (SUBLET_ADMIN_TOKEN) must be at least 16 characters");
        }
        return Ok(t.to_owned());
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to get a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    use rand::Rng;
    let token: String = {
        let mut rng = rand::rng();
        (0..40)
            .map(|_| {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
                char::from(alphabet[rng.random_range(0..alphabet.len())])
            })
            .collect()
    };
    write_private(&path, &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}
