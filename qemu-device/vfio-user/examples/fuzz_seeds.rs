//! Writes the fuzz seed corpus (a valid message of every command, and a
//! QEMU-like session) into the directory given as the only argument.

use std::path::PathBuf;

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let seeds = p2pnvme_vfio_user::fuzzing::seeds();
    for (name, bytes) in &seeds {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
}
