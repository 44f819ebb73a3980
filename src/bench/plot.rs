//! SVG percentile plots, drawn the way HdrHistogram's plotter draws them.
//!
//! The x axis is the percentile on a log scale of `1/(1-p)`: 0% at 1, 90%
//! at 10, 99% at 100, 99.9% at 1 000, and so on, so each "nine" of the tail
//! gets as much room as the whole body. The y axis is latency in
//! microseconds, linear, starting at 0. Each case is one line through the
//! rows of its [`Distribution`] (what its `.hgrm` file holds), with its
//! name in the legend. The 100% row is not drawn (it lies at infinity on
//! this axis), as in HdrHistogram's plotter; the table prints the max.
//!
//! Only the SVG backend is built: no fonts are loaded, the text is left to
//! whatever shows the file.

use plotters::prelude::*;

use super::BenchError;
use super::hgrm::Distribution;

/// Plot size in pixels.
const SIZE: (u32, u32) = (960, 540);
/// The x axis goes at least to 99% (`1/(1-p)` = 100).
const MIN_X_MAX: f64 = 100.0;

/// One line of a plot.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Its legend entry.
    pub name: &'a str,
    /// Its points.
    pub distribution: &'a Distribution,
}

/// The points of a distribution: (`1/(1-p)`, microseconds), 100% left out.
fn points(distribution: &Distribution) -> Vec<(f64, f64)> {
    distribution
        .rows()
        .iter()
        .filter(|row| row.quantile < 1.0)
        .map(|row| (1.0 / (1.0 - row.quantile), row.value_us))
        .collect()
}

/// The label of a point on the x axis: 1 is `0%`, 10 `90%`, 1 000
/// `99.9%`.
pub fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let decimals = (x.log10().round() as i32 - 2).max(0) as usize;
    format!("{percent:.decimals$}%")
}

/// The axes' ranges: x to the decade past the widest tick (at least 99%),
/// y to a tenth above the highest value; and the x axis's key points, one
/// per decade (one per "nine").
fn axes(lines: &[(&str, Vec<(f64, f64)>)]) -> (f64, f64, Vec<f64>) {
    let all = || lines.iter().flat_map(|(_, points)| points.iter());
    let widest = all().map(|(x, _)| *x).fold(MIN_X_MAX, f64::max);
    let x_max = 10f64.powf(widest.log10().ceil());
    let highest = all().map(|(_, y)| *y).fold(0.0, f64::max);
    let y_max = if highest > 0.0 { highest * 1.1 } else { 1.0 };
    let decades = (0..=x_max.log10().round() as i32)
        .map(|e| 10f64.powi(e))
        .collect();
    (x_max, y_max, decades)
}

/// Draws `series` into an SVG document titled `title`.
pub fn render_svg(title: &str, series: &[Series<'_>]) -> Result<String, BenchError> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name, points(s.distribution)))
        .collect();
    let (x_max, y_max, decades) = axes(&lines);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            // Room for the last percentile label, centred on the right edge.
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (1.0..x_max).log_scale().with_key_points(decades),
                0.0..y_max,
            )
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| {
                if y_max >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .draw()
            .map_err(plot_error)?;
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error(err: impl std::fmt::Display) -> BenchError {
    BenchError::Plot {
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_count_the_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1_000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }
}
