package main

import (
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"roost.dev/roost/bench/samples"
)

// maxPoints bounds the points of one CDF line; a proxy load has 10⁵ samples.
const maxPoints = 1000

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// drawCDF draws the cumulative distributions of the named sets that have
// samples, on a log latency axis, to a PNG at path. It draws nothing and
// returns false when none has.
func drawCDF(path, title string, names []string, sets map[string]samples.Set) (bool, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of operations ≤ latency"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	drawn := 0
	for _, name := range names {
		s, ok := sets[name]
		if !ok || len(s.Samples) == 0 {
			continue
		}
		line, err := plotter.NewLine(cdf(s.Samples))
		if err != nil {
			return false, err
		}
		line.Color = palette[drawn%len(palette)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(name, line)
		drawn++
	}
	if drawn == 0 {
		return false, nil
	}
	return true, p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// cdf returns the empirical CDF of xs, at most maxPoints points, with
// non-positive values (below a log axis) raised to a microsecond.
func cdf(xs []float64) plotter.XYs {
	s := slices.Clone(xs)
	slices.Sort(s)
	step := max(1, len(s)/maxPoints)
	var pts plotter.XYs
	for i := 0; i < len(s); i += step {
		pts = append(pts, plotter.XY{X: max(s[i], 0.001), Y: float64(i+1) / float64(len(s))})
	}
	if last := len(s) - 1; (last)%step != 0 {
		pts = append(pts, plotter.XY{X: max(s[last], 0.001), Y: 1})
	}
	return pts
}
