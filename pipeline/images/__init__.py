"""The images stage: download or read the image of every pair, verify it, hash it and store it.

One module a job:

- `stage`: `FetchImages`, the Beam part;
- `scheduler`: `FetchScheduler`, many pairs in flight, I/O and CPU on thread pools of their own;
- `fetcher`: `ImageFetcher`, one pair's image from the cache, a file or a download, and
  `REASONS`, every drop reason of the stage;
- `codec`: verify, decode, resize, encode and hash one image (`store_image`);
- `cache`: where the stored images go, and the image cache of later runs (`image_store`).

How the pipeline talks HTTP (timeouts, retries, Retry-After, the address guard) is
`pipeline.http`'s; how hard each host is pressed is `pipeline.hosts`'s.
"""

from pipeline.images.cache import image_store, resolve_cache
from pipeline.images.codec import store_image
from pipeline.images.fetcher import REASONS, STAGE, ImageFetcher
from pipeline.images.stage import FetchImages

__all__ = [
    "REASONS",
    "STAGE",
    "FetchImages",
    "ImageFetcher",
    "image_store",
    "resolve_cache",
    "store_image",
]
