#[path = "../tests/common/golden_cases.rs"]
mod golden_cases;
fn main() {
    let enc = verity_wire::Encoder::default();
    for (name, m) in golden_cases::golden_messages() {
        let mut b = bytes::BytesMut::new();
        m.encode(&enc, &mut b).unwrap();
        println!("#### `{name}`\n\n```hex");
        for line in b.chunks(16) {
            let h: Vec<String> = line.iter().map(|x| format!("{x:02x}")).collect();
            println!("{}", h.join(" "));
        }
        println!("```\n");
    }
}
