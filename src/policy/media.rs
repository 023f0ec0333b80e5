//! What a media file is, from its first bytes. Rentman names files with GUIDs and says
//! nothing about their type; the bytes do.

/// The kinds of file Rentman hands out as property media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Jpeg,
    Png,
    Gif,
    Webp,
    Tiff,
    Bmp,
    /// AVIF or HEIF (an ISO base media file).
    Heif,
    Pdf,
}

impl MediaType {
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::Jpeg => "image/jpeg",
            MediaType::Png => "image/png",
            MediaType::Gif => "image/gif",
            MediaType::Webp => "image/webp",
            MediaType::Tiff => "image/tiff",
            MediaType::Bmp => "image/bmp",
            MediaType::Heif => "image/avif",
            MediaType::Pdf => "application/pdf",
        }
    }
}

/// The number of leading bytes `sniff` needs.
pub const SNIFF_LEN: usize = 12;

/// The type of a file from its leading bytes, if it is one Rentman hands out.
pub fn sniff(b: &[u8]) -> Option<MediaType> {
    let starts = |magic: &[u8]| b.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(MediaType::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some(MediaType::Png)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(MediaType::Gif)
    } else if starts(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        Some(MediaType::Webp)
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some(MediaType::Tiff)
    } else if starts(b"BM") && b.len() >= SNIFF_LEN {
        Some(MediaType::Bmp)
    } else if b.get(4..8) == Some(b"ftyp") {
        Some(MediaType::Heif)
    } else if starts(b"%PDF-") {
        Some(MediaType::Pdf)
    } else {
        None
    }
}

/// Why bytes are not a file to keep (said of them: "the file is ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Not a type Rentman hands out (an error text, corrupt bytes).
    Unknown,
    /// A known type, cut short: its magic bytes are there, its end is not.
    Incomplete(MediaType),
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Unfit::Unknown => f.write_str("not an image or a PDF"),
            Unfit::Incomplete(t) => write!(
                f,
                "{} cut short: it ends before its own structure does",
                t.content_type()
            ),
        }
    }
}

/// The type of a whole file of a type Rentman hands out.
pub fn identify(b: &[u8]) -> Result<MediaType, Unfit> {
    let kind = sniff(b).ok_or(Unfit::Unknown)?;
    if super::media_complete::is_complete(kind, b) {
        Ok(kind)
    } else {
        Err(Unfit::Incomplete(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_signatures() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(MediaType::Jpeg)
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(MediaType::Png)
        );
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(MediaType::Pdf));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(MediaType::Webp));
        assert_eq!(sniff(b"GIF89a"), Some(MediaType::Gif));
        assert_eq!(sniff(b"\0\0\0\x1cftypavif"), Some(MediaType::Heif));
        assert_eq!(MediaType::Pdf.content_type(), "application/pdf");
        for not in [
            &b""[..],
            b"Invalid token",
            b"{\"error\":1}",
            b"[]",
            b"<html>",
        ] {
            assert_eq!(sniff(not), None, "{not:?}");
        }
    }
}
