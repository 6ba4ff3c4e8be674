from lorarun.image.buckets import BucketSpec, make_bucket_resolutions, select_bucket, steps_per_epoch


def test_bucket_resolutions_match_kohya_for_512():
    resos = make_bucket_resolutions((512, 512), 256, 1024, 64)
    # kohya's list for 512 starts at (256, 1024) and is symmetric around the square bucket.
    assert (512, 512) in resos
    assert (256, 1024) in resos and (1024, 256) in resos
    assert (384, 640) in resos and (640, 384) in resos
    assert all(w * h <= 512 * 512 for w, h in resos)
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in resos)
    assert resos == sorted(resos)


def test_select_bucket_picks_closest_aspect():
    spec = BucketSpec((512, 512))
    assert select_bucket((1024, 768), spec) == (576, 448)
    assert select_bucket((600, 900), spec) == (384, 640)
    assert select_bucket((300, 300), spec) == (512, 512)


def test_no_upscale_keeps_small_images_small_and_rounds_down():
    spec = BucketSpec((512, 512), no_upscale=True)
    assert select_bucket((300, 200), spec) == (256, 192)
    big = select_bucket((2000, 1000), spec)
    assert big[0] * big[1] <= 512 * 512 and big[0] % 64 == 0 and big[1] % 64 == 0


def test_disabled_buckets_use_the_training_resolution():
    assert select_bucket((1000, 300), BucketSpec((512, 512), enable_bucket=False)) == (512, 512)


def test_steps_round_up_per_bucket():
    assert steps_per_epoch({(512, 512): 5, (384, 640): 3}, 2) == 3 + 2
    assert steps_per_epoch({(512, 512): 500}, 2) == 250
