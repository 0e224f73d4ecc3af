"""Frame-folder datasets in the layout of PlayableVideoGeneration (PVG), made from plain videos.

    python -m dataset.acquisition.convert_video_directory   videos -> OUT/00000/00000.png, ... + OUT/videos.csv
    python -m dataset.acquisition.train_val_test_split      OUT/<seq> -> SPLITS/{train,val,test}/<seq>

SPLITS is then the input of dataset/convert_to_h5.py (--data-dir SPLITS --extension png).
"""
