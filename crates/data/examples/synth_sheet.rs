//! Writes a contact sheet of synthetic logos (rows = brands, columns = photos) for eyeballing.
//!
//! `cargo run --release -p proxima-data --example synth_sheet -- OUT.png [difficulty]`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "synth_sheet.png".into());
    let difficulty: f32 = std::env::args().nth(2).map(|d| d.parse()).transpose()?.unwrap_or(0.5);
    let o = proxima_data::SynthOptions { brands: 8, per_brand: 8, size: 64, seed: 0, difficulty };
    let mut sheet = image::RgbImage::new(64 * 8, 64 * 8);
    for b in 0..8 {
        for i in 0..8 {
            let img = proxima_data::synth::synth_image(&o, b, i);
            image::imageops::replace(&mut sheet, &img, (i * 64) as i64, (b * 64) as i64);
        }
    }
    sheet.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
