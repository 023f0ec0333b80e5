fn main() {
    std::process::exit(rentcache::cli::main());
}
