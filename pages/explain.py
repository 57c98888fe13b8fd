import streamlit as st

st.title("explain")
