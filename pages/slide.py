import streamlit as st

st.title("slide")
