//! Brochures that are PDFs (Rentman's `imgorder` 9006 may be one): a one-page PDF with a
//! line of text, padded to the wanted size with an unreferenced binary stream so readers
//! still open it (the cross-reference table lists every object at its true offset).

use rand::RngCore;

/// A PDF of about `size` bytes (exact up to the few digits of `startxref`).
pub fn padded_pdf(title: &str, size: usize, rng: &mut impl RngCore) -> Vec<u8> {
    let bare = build(title, 0, rng);
    let pad = size.saturating_sub(bare.len());
    if pad == 0 {
        return bare;
    }
    build(title, pad, rng)
}

fn build(title: &str, pad: usize, rng: &mut impl RngCore) -> Vec<u8> {
    // PDF strings need `\`, `(` and `)` escaped; keep the title plain ASCII.
    let title: String = title
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !matches!(c, '\\' | '(' | ')'))
        .collect();
    let content = format!("BT /F1 24 Tf 72 760 Td ({title}) Tj ET");
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    if pad > 0 {
        offsets.push(out.len());
        let head = format!("{} 0 obj\n<< /Length ", offsets.len());
        // Overhead of the padding object besides its payload, to land near `size`.
        let overhead = head.len() + " >>\nstream\n".len() + "\nendstream\nendobj\n".len() + 8;
        let payload = pad.saturating_sub(overhead + 20).max(1);
        out.extend_from_slice(format!("{head}{payload} >>\nstream\n").as_bytes());
        let start = out.len();
        out.resize(start + payload, 0);
        rng.fill_bytes(&mut out[start..]);
        out.extend_from_slice(b"\nendstream\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes(),
    );
    for off in &offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            offsets.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pdf_has_header_trailer_and_true_offsets() {
        let pdf = padded_pdf("Brochure (42)", 200_000, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(pdf.starts_with(b"%PDF-1.4\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        assert!((pdf.len() as i64 - 200_000).abs() < 64, "{}", pdf.len());
        let text = String::from_utf8_lossy(&pdf);
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pdf[startxref..].starts_with(b"xref\n"));
        // Each xref entry points at "N 0 obj".
        let table = &text[text.rfind("xref\n0 ").unwrap()..];
        for (n, line) in table
            .lines()
            .skip(3)
            .take_while(|l| l.ends_with(" n "))
            .enumerate()
        {
            let off: usize = line[..10].parse().unwrap();
            assert!(pdf[off..].starts_with(format!("{} 0 obj", n + 1).as_bytes()));
        }
    }
}
