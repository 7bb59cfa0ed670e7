//! `imagectl-agent`: configures an instance from its environment on every boot.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("version") => {
            println!("imagectl-agent {}", env!("CARGO_PKG_VERSION"));
        }
        _ => {
            eprintln!("usage: imagectl-agent --version");
            std::process::exit(2);
        }
    }
}
