"""libx264 settings for explained overlays: encoder CPU time, bytes and PSNR per preset and crf.

    python benchmarks/encoder_settings.py

Overlays like `seg-xai video` writes them (generated scenes panning, a smooth map coloured over each
frame with the fused overlay kernel), 240 frames at 320×240 and 48 at 1280×720, encoded in memory
with PyAV; CPU time of this process per frame (x264's threads included), the output's bytes, and the
PSNR of the decoded frames against the overlaid ones. Chooses io.ENCODINGS.
"""
import av, numpy as np, time, resource, io, torch
import seg_xai_fast as sx
from seg_xai_fast import kernels
torch.manual_seed(0)
imgs, _ = sx.synthetic_scenes(8, seed=1, size=320)
base = (imgs.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)[:, :240, :320]
def clip(n, H, W):
    out = []
    for i in range(n):
        f = np.roll(base[(i // 30) % 8], 2 * i, axis=1)
        if H != 240: f = np.ascontiguousarray(np.kron(f, np.ones((3, 4, 1), dtype=np.uint8))[:H, :W])
        m = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 8), size=(30, 40), mode="bilinear")[0] 
        out.append(kernels.overlay(torch.from_numpy(f)[None].contiguous(), m, colormap="jet", alpha=0.5)[0].numpy())
    return out
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
def enc(opts, seq):
    H, W = seq[0].shape[:2]
    buf = io.BytesIO()
    c = av.open(buf, "w", format="mp4")
    s = c.add_stream("libx264", rate=25, options=opts)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    c0 = cpu()
    for f in seq:
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")): c.mux(p)
    for p in s.encode(): c.mux(p)
    c.close()
    ms = (cpu() - c0) * 1e3 / len(seq)
    buf.seek(0)
    d = av.open(buf)
    dec = [fr.to_ndarray(format="rgb24") for fr in d.decode(video=0)]
    mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(dec, seq)])
    return ms, len(buf.getvalue()), 10 * np.log10(255 ** 2 / mse)
for H, W, n in ((240, 320, 240), (720, 1280, 48)):
    seq = clip(n, H, W)
    for opts in ({"preset": "superfast", "crf": "27"}, {"preset": "veryfast", "crf": "23"}, {"preset": "ultrafast", "crf": "27"}, {"preset": "ultrafast", "crf": "25"},
                 {"preset": "ultrafast", "crf": "23"}, {"preset": "ultrafast", "crf": "21"}):
        print(H, opts, "cpu ms/frame %.2f bytes %d psnr %.2f" % enc(opts, seq), flush=True)
