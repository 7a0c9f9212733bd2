"""Media decoding: images through PIL, videos through decord or PyAV, one error type.

    load_image(path) -> PIL.Image (RGB, upright)
    image_size(path) -> (width, height), header only
    load_video(path, *, num_frames, fps, frames_upbound, force_sample, backend, size) -> VideoClip
    video_info(path) -> VideoInfo(num_frames, fps, duration, width, height), no decoding
    sample_frame_indices(total_frames, source_fps, ...) -> frame indices load_video will decode
    frame_timestamps(indices, source_fps) -> their times in seconds, before decoding

Every unreadable input raises MediaError(path, reason).
"""

from onevision.data.media.errors import MediaError
from onevision.data.media.frame_folder import FRAME_FOLDER_FPS
from onevision.data.media.image import image_size, load_image
from onevision.data.media.probe import VideoInfo, video_info
from onevision.data.media.sampling import DEFAULT_SAMPLE_FPS, frame_timestamps, sample_frame_indices
from onevision.data.media.video import BACKENDS, VideoClip, load_video

__all__ = [
    "BACKENDS",
    "DEFAULT_SAMPLE_FPS",
    "FRAME_FOLDER_FPS",
    "MediaError",
    "VideoClip",
    "VideoInfo",
    "frame_timestamps",
    "image_size",
    "load_image",
    "load_video",
    "sample_frame_indices",
    "video_info",
]
