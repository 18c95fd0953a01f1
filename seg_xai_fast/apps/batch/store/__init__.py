"""The explanation store of `seg-xai explain`: compact map files (one per batch), a crash-safe manifest.

Layout of an output folder DIR (see docs/batch.md)::

    DIR/manifest.jsonl            line 1: the run header (model, layer, method, classes, version...);
                                  then one JSON line per explained image (input → output files)
    DIR/maps/<ab>/<batch>.npz     per batch: float16 maps [n,K,h,w] at the target layer's resolution
    DIR/overlays/<ab>/<key>_c<class>.png   optional, one per explained class
    DIR/failures.csv              path,reason of the inputs that could not be explained (last run)
    DIR/.tmp/  DIR/.lock          temp files of the run in progress; the single-writer lock

<key> is a hash of the input's resolved absolute path, <batch> a hash of its images' keys, and
<ab> their first two hex digits (256 shards). An image's manifest line names its batch's file and
its place (`member`) in it.

Crash safety: every file is written to DIR/.tmp, fsync'ed and renamed into place (os.replace is
atomic), and an image's manifest line is appended (and fsync'ed) only after all its files are in
place. A line torn by a kill is ignored on read and cut off before the next append, and an image
counts as done only when the files of its last line have the digests recorded there and its input
still has its recorded digest (else it is redone), so any crash loses at most the images in flight.

Compact maps: the Explainer's maps are N(R(c)), with c the normalised CAM at the target layer's
resolution (h, w), R the bilinear upsample to the model output's size and N the ReLU + per-map
min-max. The job asks the explainer for c itself (resolution="layer"), stores it as float16, and
reading computes N(R(c)): the full map up to float16 rounding (max abs error ≈ 5e-4, tested).

Modules: layout.py (file names, keys, paths, real folders), digests.py (model, input and output
digests; whether an entry is current), manifest.py (reading the manifest, its index, cutting a
torn line), files.py (a batch's maps file and overlays; expanding the compact maps), load.py
(reading an explanation back, verified), run_store.py (`Store`: one run's lock, header check,
appends and failures).
"""
from .digests import content_digest, entry_is_current, file_digest, model_digest
from .files import StoreFiles, expand_maps
from .layout import (
    FAILURES,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    TMP_DIR,
    image_key,
    maps_relpath,
    overlay_relpath,
    real_dirs,
    resolve_input,
)
from .load import DamagedOutputError, StoredExplanation, load_explanation
from .manifest import manifest_entries, manifest_entry, manifest_index, read_manifest
from .run_store import COMPARED_FIELDS, Store, StoreMismatchError
