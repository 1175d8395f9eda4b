package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot draws res's timeline into path (.svg or .png): the rate per second
// and, where the scenario measures latency, p50, p99 and max per second
// below it.
func Plot(res *Result, path string) error {
	if len(res.Timeline) == 0 {
		return fmt.Errorf("the %s run has no timeline to plot", res.Scenario)
	}
	rate := plotter.XYs{}
	lat := map[string]plotter.XYs{}
	for _, p := range res.Timeline {
		rate = append(rate, plotter.XY{X: p.T, Y: p.Rate})
		if p.P99 > 0 {
			lat["p50"] = append(lat["p50"], plotter.XY{X: p.T, Y: p.P50})
			lat["p99"] = append(lat["p99"], plotter.XY{X: p.T, Y: p.P99})
			lat["max"] = append(lat["max"], plotter.XY{X: p.T, Y: p.Max})
		}
	}
	title := fmt.Sprintf("parley bench %s: %.0f %s", res.Scenario, res.Rate, res.Unit)
	top := plot.New()
	top.Title.Text = title
	top.X.Label.Text = "seconds"
	top.Y.Label.Text = strings.TrimSuffix(res.Unit, "/s") + " per second"
	top.Y.Min = 0
	top.X.Min = 0
	top.Add(plotter.NewGrid())
	if err := addLine(top, "", rate, color.RGBA{B: 200, A: 255}); err != nil {
		return err
	}
	plots := [][]*plot.Plot{{top}}
	if len(lat["p99"]) > 0 {
		bottom := plot.New()
		bottom.X.Label.Text = "seconds"
		bottom.Y.Label.Text = "latency (ms)"
		bottom.Y.Min = 0
		bottom.Add(plotter.NewGrid())
		bottom.Legend.Top = true
		for _, l := range []struct {
			name string
			c    color.RGBA
		}{{"p50", color.RGBA{G: 150, A: 255}}, {"p99", color.RGBA{R: 220, G: 120, A: 255}}, {"max", color.RGBA{R: 200, A: 255}}} {
			if err := addLine(bottom, l.name, lat[l.name], l.c); err != nil {
				return err
			}
		}
		plots = append(plots, []*plot.Plot{bottom})
	}
	w, h := 9*vg.Inch, vg.Length(len(plots))*3.2*vg.Inch
	var c vg.CanvasWriterTo
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		c = vgsvg.New(w, h)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))}
	default:
		return fmt.Errorf("plot %s: want a .svg or .png file", path)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
	return nil
}
