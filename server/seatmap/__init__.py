"""Seat maps from the venue's seating chart (issue 12).

* `server.seatmap.chart`: read a chart (CSV/JSON, common export shapes) into seats, refuse bad charts;
* `server.seatmap.store`: the chart and the per-camera mappings in the database (atomic replace, bulk insert);
* `server.seatmap.project`: plan -> image homography from point pairs, the seats one camera sees as its layout.

The format is documented in docs/seatmaps.md.
"""
